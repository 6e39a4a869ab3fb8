"""The error codes an operation or a request can end with, the HTTP-like status of each and
the fixed `error.type` that goes with it (docs/contract.md, "Error codes")."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    SKIPPED = "SKIPPED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    UNAVAILABLE = "UNAVAILABLE"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def error_type(self) -> str:
        """The public `error.type` of this code: one fixed word per code, so that an event
        never names an internal exception class."""
        return _TYPE[self]


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.SKIPPED: 424,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.UNAVAILABLE: 503,
}

_TYPE: dict[ErrorCode, str] = {
    ErrorCode.VALIDATION_ERROR: "ValidationError",
    ErrorCode.PERMISSION_DENIED: "PermissionError",
    ErrorCode.NOT_FOUND: "NotFoundError",
    ErrorCode.METHOD_NOT_ALLOWED: "MethodNotAllowedError",
    ErrorCode.CONFLICT: "ConflictError",
    ErrorCode.SKIPPED: "Skipped",
    ErrorCode.INTERNAL_ERROR: "InternalError",
    ErrorCode.UNAVAILABLE: "Unavailable",
}
