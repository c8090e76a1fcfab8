"""affcli pipeline package."""
