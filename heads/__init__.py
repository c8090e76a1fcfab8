"""affcli heads package."""
