"""servables.FlatCall: the server's fast path into a loaded signature gives the structured
call's outputs exactly, and anything the fast path would not check goes the structured way
(with TensorFlow's own error)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_serving.server.servables import FlatCall, Servable

from .conftest import ROWS


def _inputs(fn, rows):
    specs = fn.structured_input_signature[1]
    out = {}
    for name, spec in specs.items():
        values = [r.get(name, "" if spec.dtype == tf.string else 0) for r in rows]
        out[name] = tf.constant(np.array(values, dtype=object if spec.dtype == tf.string else
                                         spec.dtype.as_numpy_dtype).reshape(-1, 1))  # fmt: skip
    return out


@pytest.mark.slow
@pytest.mark.parametrize("signature", ["serving_default", "rank", "explain"])
def test_flat_call_equals_the_structured_call(exported, signature):
    servable = Servable("census", 1, exported)
    call = servable.signatures[signature].fn
    assert isinstance(call, FlatCall) and call._specs is not None  # the fast path is taken
    inputs = _inputs(call.fn, ROWS)
    fast, structured = call(**inputs), call.fn(**inputs)
    assert sorted(fast) == sorted(structured)
    for key in structured:
        np.testing.assert_array_equal(fast[key].numpy(), structured[key].numpy())


@pytest.mark.slow
def test_inputs_the_fast_path_does_not_check_take_the_structured_call(exported):
    call = Servable("census", 1, exported).signatures["serving_default"].fn
    inputs = _inputs(call.fn, ROWS)
    # float64 where the signature takes float32, and a missing input: FlatCall raises what
    # the structured call raises (it is the structured call that runs).
    wrong = dict(inputs, age=tf.constant(np.array([[39.0]] * len(ROWS), np.float64)))
    missing = {k: v for k, v in inputs.items() if k != "age"}
    for bad in (wrong, missing):
        with pytest.raises(Exception) as direct:
            call.fn(**bad)
        with pytest.raises(type(direct.value)):
            call(**bad)
