"""JSON ↔ tensors and tf.Examples, as TF Serving's REST API converts them.

The rules follow tensorflow_serving/util/json_tensor.cc (tf_serving/README.md lists them):
strings or ``{"b64": ...}`` for DT_STRING, any JSON number for float types (an integer
literal beyond the float's exact range is converted, not refused), integer literals for
integer types; for tf.Examples a number with a decimal point or an exponent is a
float_list value and an integer literal an int64_list value. The project refuses
non-finite numbers (NaN, ±Infinity, a number beyond the float range): here for tf.Example
features, and for tensors in `tf_serving.server.inference` (both fronts pass there).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

import grpc
import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2

from tf_serving.server.inference import NON_FINITE_RULE
from tf_serving.server.servables import INT64_MAX
from tf_serving.server.status import ServingError, dtype_name, invalid

FLOAT_TYPES = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_HALF: np.float16,
}
INT_TYPES = {
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
}
FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_JSON_IN_MESSAGE = 512
# rapidjson's messages for the parse errors Python's json reports differently.
_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Extra data": "The document root must not be followed by other values.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
}
# A \uD800-\uDFFF escape: only then can a decoded string hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def json_str(value: Any) -> str:
    """A JSON value for an error message, cut at 512 characters."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(text) > _MAX_JSON_IN_MESSAGE:
        text = text[:_MAX_JSON_IN_MESSAGE] + "..."
    return text


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def parse_json_object(body: bytes) -> dict:
    """A request body → its JSON object, with rapidjson's error wording.

    A string holding a lone UTF-16 surrogate (``"\\ud800"``) is refused, as rapidjson
    does; Python would decode it into a str that cannot be encoded back.
    """
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: {e.start}") from e
    if not text.strip():
        raise invalid(f"JSON Parse error: The document is empty. at offset: {len(text)}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        message = _RAPIDJSON_MESSAGES.get(e.msg, e.msg)
        raise invalid(f"JSON Parse error: {message} at offset: {e.pos}") from e
    except RecursionError as e:
        raise invalid("JSON Parse error: The document is too deeply nested.") from e
    del text
    match = _SURROGATE_ESCAPE.search(body)
    if match is not None and _has_lone_surrogate(doc):
        raise invalid(
            f"JSON Parse error: The surrogate pair in string is invalid. at offset: {match.start()}"
        )
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {json_str(doc)} Is not object")
    return doc


def _has_lone_surrogate(doc: Any) -> bool:
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
    return False


def dumps(obj: Any) -> bytes:
    """A response body: UTF-8 JSON (NaN written as NaN, as TF Serving writes it)."""
    try:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj).encode("ascii")


# ----------------------------------------------------------------------------------------
# JSON → tensors.


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _b64_decode(value: Any) -> bytes:
    if not is_b64(value):
        raise invalid(f"JSON Value: {json_str(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise invalid("Unable to base64 decode") from e


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid(
        f"JSON Value: {json_str(value)} Type: {json_type(value)} is not of expected type: "
        f"{dtype_name(dtype)}"
    )


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer literal beyond double: infinite, refused later
        return math.copysign(math.inf, value)


def _json_leaf(value: Any, dtype: int) -> Any:
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, dict):
            return _b64_decode(value)
        raise _type_error(value, dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if dtype == types_pb2.DT_BOOL and isinstance(value, bool):
            return value
        raise _type_error(value, dtype)
    if dtype in FLOAT_TYPES:
        return _as_float(value)
    if dtype in INT_TYPES:
        info = np.iinfo(INT_TYPES[dtype])
        if isinstance(value, float) or not info.min <= value <= info.max:
            raise _type_error(value, dtype)
        return value
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_str(value)} to type: {dtype_name(dtype)}",
    )


def _dense_shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _fill_leaves(value: Any, level: int, shape: tuple, dtype: int, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid(
                f"JSON Value: {json_str(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        out.append(_json_leaf(value, dtype))
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    for v in value:
        _fill_leaves(v, level + 1, shape, dtype, out)


def _numpy_dtype(dtype: int):
    if dtype == types_pb2.DT_STRING:
        return object
    if dtype in FLOAT_TYPES:
        return FLOAT_TYPES[dtype]
    if dtype in INT_TYPES:
        return INT_TYPES[dtype]
    if dtype == types_pb2.DT_BOOL:
        return np.bool_
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED, f"JSON conversion to type {dtype_name(dtype)}"
    )


def _fast_numeric(value: Any, dtype: int) -> np.ndarray | None:
    """Vectorized conversion of a well-formed numeric JSON value; None → use the slow path."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = arr.dtype.kind
    if dtype in FLOAT_TYPES:
        if kind not in "fiu":
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            return arr.astype(FLOAT_TYPES[dtype])
    if dtype in INT_TYPES:
        info = np.iinfo(INT_TYPES[dtype])
        if kind not in "iu" or (arr.size and (arr.max() > info.max or arr.min() < info.min)):
            return None
        return arr.astype(INT_TYPES[dtype])
    if dtype == types_pb2.DT_BOOL and kind == "b":
        return arr
    return None


def json_to_array(value: Any, dtype: int) -> np.ndarray:
    """A JSON value (scalar or nested lists) → ndarray of the TF ``dtype`` enum.

    Numbers beyond a float type's range become ±inf here; `inference.check_finite`
    refuses them, naming the input.
    """
    if dtype != types_pb2.DT_STRING:
        arr = _fast_numeric(value, dtype)
        if arr is not None:
            return arr
    shape = _dense_shape(value)
    flat: list = []
    _fill_leaves(value, 0, shape, dtype, flat)
    np_type = _numpy_dtype(dtype)
    if np_type is object:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    with np.errstate(over="ignore"):
        return np.array(flat, dtype=np_type).reshape(shape)


def array_to_json(value: np.ndarray, alias: str = "") -> Any:
    """An output tensor → JSON (float32 in its shortest round-trip form; ``*_bytes`` → b64)."""
    if value.dtype == object or value.dtype.kind == "S":
        if alias.endswith("_bytes"):
            convert = lambda b: {"b64": base64.b64encode(b).decode("ascii")}  # noqa: E731
        else:
            convert = lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)  # noqa: E731
        flat = np.empty(value.size, dtype=object)
        flat[:] = [convert(b) for b in value.reshape(-1)]
        return flat.reshape(value.shape).tolist()
    if value.dtype in (np.float32, np.float16):
        return value.astype(str).astype(np.float64).tolist()
    return value.tolist()


# ----------------------------------------------------------------------------------------
# JSON → tf.Example.


def _non_finite(name: str, value: Any) -> ServingError:
    return invalid(f"Feature: {name} has a non-finite value: {json_str(value)}. {NON_FINITE_RULE}")


def json_to_example(obj: Any) -> example_pb2.Example:
    """A JSON object → tf.Example (TF Serving's Classify/Regress REST conversion).

    A string or ``{"b64": ...}`` → bytes_list; a number written with a decimal point or an
    exponent → float_list; an integer literal or true/false → int64_list; a list holds
    several values of one kind. A float value that is not finite as a float32 is refused.
    """
    if not isinstance(obj, dict):
        raise invalid(f"Example must be JSON object but got JSON {json_type(obj)}")
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in obj.items():
        values = content if isinstance(content, list) else [content]
        kind = None
        out: list = []
        for v in values:
            if isinstance(v, bool):
                this, item = "int64", int(v)
            elif isinstance(v, str):
                this, item = "bytes", v.encode("utf-8")
            elif isinstance(v, dict) and is_b64(v):
                this, item = "bytes", _b64_decode(v)
            elif isinstance(v, float):
                this, item = "float", v
            elif isinstance(v, int):
                if v > INT64_MAX:
                    if v < 2**64:
                        raise invalid(
                            f"Feature: {name} has uint64 element. Only int64 is supported."
                        )
                    this, item = "float", _as_float(v)
                elif v < -(2**63):
                    this, item = "float", _as_float(v)
                else:
                    this, item = "int64", v
            else:
                raise invalid(
                    f"Feature: {name} has element with unexpected JSON type: {json_type(v)}"
                )
            if this == "float" and not (math.isfinite(item) and abs(item) <= FLOAT32_MAX):
                raise _non_finite(name, v)
            if kind is not None and this != kind:
                raise invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")
            kind = this
            out.append(item)
        feature = feature_pb2.Feature()
        if kind == "bytes":
            feature.bytes_list.value.extend(out)
        elif kind == "float":
            feature.float_list.value.extend(out)
        elif kind == "int64":
            feature.int64_list.value.extend(out)
        features[name].CopyFrom(feature)
    return example
