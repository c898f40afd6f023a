"""Principals (users with a role) and their bearer tokens.

Shared by every service because every service authenticates callers; the
identity tables are owned here and nowhere else.
"""
