"""Expected ways an operation fails, each carrying its public error code (docs/contract.md).

    OperationFailed
    ├── InvalidData          VALIDATION_ERROR  400
    ├── PermissionDenied     PERMISSION_DENIED 403
    ├── ResourceNotFound     NOT_FOUND         404
    ├── MethodNotAllowed     METHOD_NOT_ALLOWED 405
    └── Conflict             CONFLICT          409

Anything else raised by a handler is unexpected and reported as INTERNAL_ERROR.
"""

from __future__ import annotations

from typing import ClassVar

from contracts import ErrorCode


class OperationFailed(Exception):
    code: ClassVar[ErrorCode]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def public_type(self) -> str:
        """The event's `error.type`: the fixed word of the code, never a class name."""
        return self.code.error_type


class InvalidData(OperationFailed):
    code = ErrorCode.VALIDATION_ERROR


class PermissionDenied(OperationFailed):
    code = ErrorCode.PERMISSION_DENIED


class ResourceNotFound(OperationFailed):
    code = ErrorCode.NOT_FOUND


class MethodNotAllowed(OperationFailed):
    code = ErrorCode.METHOD_NOT_ALLOWED


class Conflict(OperationFailed):
    code = ErrorCode.CONFLICT
