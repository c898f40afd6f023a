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
status codes, so the mapping lives in one place.
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
