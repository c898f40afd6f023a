"""The editor console (being built)."""

ROUTES: list = []
