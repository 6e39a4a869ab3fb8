"""Expected ways an operation fails, each carrying its public error code (DESIGN §4).

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
    # The public `error.type` of the event, named like DESIGN §4's example ("PermissionError").
    public_type: ClassVar[str]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidData(OperationFailed):
    public_type = "ValidationError"
    code = ErrorCode.VALIDATION_ERROR


class PermissionDenied(OperationFailed):
    public_type = "PermissionError"
    code = ErrorCode.PERMISSION_DENIED


class ResourceNotFound(OperationFailed):
    public_type = "NotFoundError"
    code = ErrorCode.NOT_FOUND


class MethodNotAllowed(OperationFailed):
    public_type = "MethodNotAllowedError"
    code = ErrorCode.METHOD_NOT_ALLOWED


class Conflict(OperationFailed):
    public_type = "ConflictError"
    code = ErrorCode.CONFLICT
