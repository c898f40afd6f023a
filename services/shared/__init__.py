"""Thin shared infrastructure: settings, database, blob store, auth, gRPC bootstrap, tasks.

Nothing here knows about posts, reps or views; service packages build on it.
"""
