"""Every error Kindling answers, each mapped to its AWS error type and HTTP status.

Below the frontend, code raises these; the frontend turns them into AWS's JSON
error body plus the ``X-Amzn-ErrorType`` header, so boto3 raises the exception
class of the same name. Body shapes follow the recorded AWS responses: most carry
``{"Type": "User", "message": ...}``; ResourceNotFoundException spells it
``Message``; ValidationException and RequestEntityTooLargeException carry only
the message.
"""

from __future__ import annotations


class LambdaError(Exception):
    """An error with AWS's wire identity: a type name, an HTTP status, a message."""

    code = "ServiceException"
    status = 500
    kind: str | None = "Service"  # the body's "Type"; None leaves it out
    message_key = "message"

    def __init__(self, message: str, *, typed: bool = True, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra  # additional body members, e.g. Reason for throttles
        if not typed:  # a few of AWS's answers leave "Type" out of an error that usually has it
            self.kind = None

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.kind:
            out["Type"] = self.kind
        out[self.message_key] = self.message
        out.update(self.extra)
        return out


def _error(name: str, status: int, kind: str | None = "User", key: str = "message") -> type[LambdaError]:
    return type(name, (LambdaError,), {"code": name, "status": status, "kind": kind, "message_key": key})


ValidationException = _error("ValidationException", 400, kind=None)
InvalidParameterValueException = _error("InvalidParameterValueException", 400)
InvalidRequestContentException = _error("InvalidRequestContentException", 400)
# A member whose JSON type is not its model's (AWS's deserializer answers before any validation).
SerializationException = _error("SerializationException", 400, kind=None)
RequestTooLargeException = _error("RequestTooLargeException", 413)
RequestEntityTooLargeException = _error("RequestEntityTooLargeException", 413, kind=None)
ResourceNotFoundException = _error("ResourceNotFoundException", 404, key="Message")
ResourceConflictException = _error("ResourceConflictException", 409)
ProvisionedConcurrencyConfigNotFoundException = _error("ProvisionedConcurrencyConfigNotFoundException", 404)
ResourceInUseException = _error("ResourceInUseException", 400)
PreconditionFailedException = _error("PreconditionFailedException", 412)
PolicyLengthExceededException = _error("PolicyLengthExceededException", 400)
TooManyRequestsException = _error("TooManyRequestsException", 429)
RecursiveInvocationException = _error("RecursiveInvocationException", 400, key="Message")
CodeStorageExceededException = _error("CodeStorageExceededException", 400)
UnsupportedMediaTypeException = _error("UnsupportedMediaTypeException", 415)
ServiceException = _error("ServiceException", 500, kind="Service")
# A VPC function whose subnet or security group the operator has removed since (kindling.network.vpc).
InvalidSubnetIDException = _error("InvalidSubnetIDException", 502)
InvalidSecurityGroupIDException = _error("InvalidSecurityGroupIDException", 502)
ResourceNotReadyException = _error("ResourceNotReadyException", 502, kind="Service")
UnknownOperationException = _error("UnknownOperationException", 404, kind=None)
AccessDeniedException = _error("AccessDeniedException", 403, kind=None)
UnrecognizedClientException = _error("UnrecognizedClientException", 403, kind=None)
InvalidSignatureException = _error("InvalidSignatureException", 403, kind=None)
IncompleteSignatureException = _error("IncompleteSignatureException", 400, kind=None)


class LogsError(LambdaError):
    """A CloudWatch Logs API error: awsJson1.1's body ``{"__type": ..., "message": ...}``, status 400."""

    status = 400
    kind = None

    def body(self) -> dict[str, object]:
        return {"__type": self.code, "message": self.message, **self.extra}


def _logs_error(name: str, status: int = 400) -> type[LogsError]:
    return type(name, (LogsError,), {"code": name, "status": status})


LogsResourceNotFoundException = _logs_error("ResourceNotFoundException")
LogsResourceAlreadyExistsException = _logs_error("ResourceAlreadyExistsException")
InvalidParameterException = _logs_error("InvalidParameterException")
LogsUnknownOperationException = _logs_error("UnknownOperationException")
LogsSerializationException = _logs_error("SerializationException")


# An identity-based policy's denial: Lambda words it {"Message": "User: ... is not authorized to perform: ..."}
NotAuthorized = _error("AccessDeniedException", 403, kind=None, key="Message")
# A session token that was genuine but is no longer valid (its session ended: expired or revoked).
ExpiredTokenException = _error("ExpiredTokenException", 403, kind=None)


class IamError(LambdaError):
    """An IAM or STS error (query protocol): rendered as ``<ErrorResponse><Error><Type>Sender</Type>...``."""

    status = 400
    kind = "Sender"


def _iam_error(name: str, status: int) -> type[IamError]:
    return type(name, (IamError,), {"code": name, "status": status})


NoSuchEntity = _iam_error("NoSuchEntity", 404)
EntityAlreadyExists = _iam_error("EntityAlreadyExists", 409)
MalformedPolicyDocument = _iam_error("MalformedPolicyDocument", 400)
ValidationError = _iam_error("ValidationError", 400)
DeleteConflict = _iam_error("DeleteConflict", 409)
LimitExceeded = _iam_error("LimitExceeded", 409)
InvalidInput = _iam_error("InvalidInput", 400)
IamAccessDenied = _iam_error("AccessDenied", 403)
InvalidAction = _iam_error("InvalidAction", 400)
