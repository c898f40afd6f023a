"""The sales console (being built)."""

ROUTES: list = []
