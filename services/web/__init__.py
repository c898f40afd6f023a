"""The HTTP edge: pages for reps, customers, sales and editors, in front of the three gRPC services."""
