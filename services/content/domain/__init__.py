"""Pure content rules: no gRPC, SQL or Celery imports (a test enforces it)."""
