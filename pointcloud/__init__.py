"""affcli pointcloud package."""
