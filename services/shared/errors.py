"""The one error tree every service raises, and its mapping to gRPC status codes.

::

    ServiceError                      (never raised directly)
    ├── InvalidArgument(field, msg)   -> INVALID_ARGUMENT  bad input; names the field
    ├── NotFound                      -> NOT_FOUND
    ├── AlreadyExists                 -> ALREADY_EXISTS
    ├── FailedPrecondition            -> FAILED_PRECONDITION  wrong state for the call
    ├── Aborted                       -> ABORTED  etag mismatch / concurrent change
    ├── Unauthenticated               -> UNAUTHENTICATED
    ├── PermissionDenied              -> PERMISSION_DENIED
    ├── ResourceExhausted             -> RESOURCE_EXHAUSTED  rate limits
    └── Unavailable                   -> UNAVAILABLE  a backing store is down; retry later

Domain code raises these; only ``services.shared.grpcserver`` turns them into
status codes, so the mapping lives in one place. This module imports nothing,
so domain packages can use it and stay free of gRPC.
"""

from __future__ import annotations


class ServiceError(Exception):
    status: str = "UNKNOWN"  # a grpc.StatusCode name; mapped in grpcserver

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    status = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(ServiceError):
    status = "NOT_FOUND"


class AlreadyExists(ServiceError):
    status = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    status = "FAILED_PRECONDITION"


class Aborted(ServiceError):
    status = "ABORTED"


class Unauthenticated(ServiceError):
    status = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    status = "PERMISSION_DENIED"


class ResourceExhausted(ServiceError):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    status = "UNAVAILABLE"
