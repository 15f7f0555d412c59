"""String tensor values, shared by the gRPC and REST clients and the server's tensor protos.

Without TensorFlow: the REST client uses it and must not load TensorFlow.
"""

from __future__ import annotations


def text_values(values: list, as_bytes: bool = True) -> list:
    """Strings and bytes as a string tensor holds them: str → UTF-8 bytes (kept as str with
    ``as_bytes=False``), ``np.bytes_`` → bytes. Raises ValueError naming anything else.

    All-str or all-bytes lists (a rank request's 200 candidates) take one C-level pass over
    the types and one over the values, not a Python-level check per element.
    """
    kinds = set(map(type, values))
    if kinds == {bytes} or (kinds == {str} and not as_bytes):
        return values
    if kinds == {str}:
        return list(map(str.encode, values))
    out = list(values)
    for i, v in enumerate(out):
        if isinstance(v, str):
            if as_bytes:
                out[i] = v.encode()
        elif isinstance(v, bytes):
            if type(v) is not bytes:  # np.bytes_
                out[i] = bytes(v)
        else:
            raise ValueError(f"expected strings or bytes, got {v!r}")
    return out
