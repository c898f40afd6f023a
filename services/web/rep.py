"""The rep page (being built)."""

ROUTES: list = []
