"""Benchmarks of the content service, run by ``make bench`` (``python -m bench``).

Every figure is reported next to a floor measured in the same run on the same
machine (a no-op RPC, a plain blob-store put), so the ratio is what carries
over between machines. Nothing here asserts on timings.

- ``reads``: GetPost / ListPosts latency over gRPC on loopback, SQLite and PostgreSQL;
- ``uploads``: UploadAsset throughput against a plain blob-store put of the same bytes.
"""
