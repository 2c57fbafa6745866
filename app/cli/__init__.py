"""The `atelier` command. Its commands are here; it is assembled with the app's own parts in
`app/main.py` (`cli()`), so `atelier generate` runs exactly what the server runs."""
