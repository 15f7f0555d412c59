"""TensorProto ↔ numpy without TensorFlow's per-element Python conversions.

``tf.make_tensor_proto`` and ``tf.make_ndarray`` walk string tensors element by element;
for a 200-candidate rank request that was most of the gRPC client's time. These write and
read the same protos (numbers in little-endian ``tensor_content``, strings in
``string_val``) and fall back to TensorFlow for anything else.
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from tf_serving.strings import text_values

# numpy dtype (little-endian code) ↔ DataType enum.
_NUMPY_TO_DT = {
    "f4": types_pb2.DT_FLOAT,
    "f8": types_pb2.DT_DOUBLE,
    "f2": types_pb2.DT_HALF,
    "i4": types_pb2.DT_INT32,
    "i8": types_pb2.DT_INT64,
    "i2": types_pb2.DT_INT16,
    "i1": types_pb2.DT_INT8,
    "u1": types_pb2.DT_UINT8,
    "u2": types_pb2.DT_UINT16,
    "u4": types_pb2.DT_UINT32,
    "u8": types_pb2.DT_UINT64,
    "b1": types_pb2.DT_BOOL,
}
_DT_TO_NUMPY = {dt: np.dtype("<" + code) for code, dt in _NUMPY_TO_DT.items()}


def tensor_proto(
    arr: np.ndarray, out: tensor_pb2.TensorProto | None = None
) -> tensor_pb2.TensorProto:
    """A TensorProto of a numeric array or an object array of str (sent as UTF-8) or bytes.

    ``out``: fill this (empty) proto instead of a new one, e.g. ``request.inputs[name]``,
    which saves copying a request's tensors into it.
    """
    arr = np.asarray(arr)
    proto = tensor_pb2.TensorProto() if out is None else out
    proto.tensor_shape.SetInParent()  # present even for a scalar, as TensorFlow writes it
    dims = proto.tensor_shape.dim
    for d in arr.shape:
        dims.add(size=int(d))
    if arr.dtype == object:
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(text_values(arr.reshape(-1).tolist()))
        return proto
    enum = _NUMPY_TO_DT.get(arr.dtype.str[1:])
    if enum is None:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(arr))
        return proto
    proto.dtype = enum
    proto.tensor_content = np.ascontiguousarray(arr, dtype=_DT_TO_NUMPY[enum]).tobytes()
    return proto


def tensor_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The ndarray of a TensorProto (what ``tf.make_ndarray`` returns)."""
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    size = math.prod(shape)  # numpy's prod costs ~10 µs a call, per input of every request
    if proto.dtype == types_pb2.DT_STRING and len(proto.string_val) == size:
        out = np.empty(size, dtype=object)
        out[:] = list(proto.string_val)
        return out.reshape(shape)
    dtype = _DT_TO_NUMPY.get(proto.dtype)
    if (
        dtype is not None
        and proto.tensor_content
        and len(proto.tensor_content) == size * dtype.itemsize
    ):
        return (
            np.frombuffer(proto.tensor_content, dtype=dtype)
            .reshape(shape)
            .astype(dtype.newbyteorder("="), copy=True)
        )
    import tensorflow as tf

    return tf.make_ndarray(proto)
