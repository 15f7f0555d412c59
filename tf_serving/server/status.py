"""TF Serving's status codes, their HTTP mapping, and the error type every layer raises."""

from __future__ import annotations

import grpc
import tensorflow as tf
from tensorflow.core.framework import types_pb2

# tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode.
HTTP_CODES = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# What a 500 says: the exception itself goes to the log, never to the client.
INTERNAL_MESSAGE = "Internal error while handling the request; the server log has the details"


class ServingError(Exception):
    """A request or load failure with TF Serving's status code (= the gRPC code)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_CODES.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def error_from_exception(e: BaseException) -> ServingError:
    """TF Serving's status for an exception raised while loading or running a model.

    TensorFlow's own errors keep their code and message (they are what TF Serving's C++
    session returns); anything else that is not a `ServingError` is an internal error
    whose text stays in the log.
    """
    if isinstance(e, ServingError):
        return e
    if isinstance(e, tf.errors.OpError):
        code = CODE_BY_NUMBER.get(int(e.error_code), grpc.StatusCode.UNKNOWN)
        return ServingError(code, e.message)
    if isinstance(e, FileNotFoundError):
        return ServingError(grpc.StatusCode.NOT_FOUND, str(e))
    if isinstance(e, (ValueError, TypeError)):
        return invalid(str(e))
    return ServingError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def dtype_name(dtype: int) -> str:
    """TF's DataTypeString: DT_FLOAT → "float"."""
    try:
        return types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"dtype_{dtype}"
