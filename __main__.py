"""`python -m affcli` runs the command line."""
from affcli.cli import app

app()
