"""The server's two fast paths into a loaded signature.

servables.FlatCall gives the structured call's outputs exactly, and anything it would not
check goes the structured way (with TensorFlow's own error). servables.ProtoCall (Predict's
TensorProtos parsed in the graph) gives the checked path's outputs exactly and leaves every
request it cannot answer to that path, which raises the precise error."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from tf_serving.server.runner import Runner
from tf_serving.server.servables import FlatCall, Servable
from tf_serving.server.status import ServingError

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


# -- ProtoCall: Predict's TensorProtos parsed inside the graph ------------------------------


def _protos(inputs) -> dict:
    """TensorFlow's own encoding of each input (not the project's tensor_proto)."""
    return {k: tf.make_tensor_proto(v.numpy()) for k, v in inputs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("signature", ["serving_default", "rank", "explain"])
def test_proto_call_equals_the_checked_path(exported, signature):
    servable = Servable("census", 1, exported)  # holds the variables the signature reads
    sig = servable.signatures[signature]
    inputs = _inputs(sig.fn.fn, ROWS)
    direct = sig.proto_call(_protos(inputs))
    assert direct is not None  # the direct path answered
    checked = Runner.call_signature(sig.fn, {k: v.numpy() for k, v in inputs.items()})
    assert sorted(direct) == sorted(checked) == sorted(sig.outputs)
    for key in checked:
        np.testing.assert_array_equal(direct[key], checked[key])


@pytest.mark.slow
def test_proto_call_fills_short_values_as_tensorflow_does(exported):
    # Tensor::FromProto (what TF Serving's Predict parses with) repeats the last value when
    # a TensorProto holds fewer values than its shape: one age for three rows means that
    # age in every row.
    servable = Servable("census", 1, exported)
    sig = servable.signatures["serving_default"]
    inputs = _inputs(sig.fn.fn, ROWS)
    protos = _protos(inputs)
    short = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[39.0])
    short.tensor_shape.dim.add(size=len(ROWS))
    short.tensor_shape.dim.add(size=1)
    protos["age"] = short
    same_age = dict(inputs, age=tf.constant([[39.0]] * len(ROWS)))
    expected = sig.fn.fn(**same_age)
    direct = sig.proto_call(protos)
    for key in expected:
        np.testing.assert_array_equal(direct[key], expected[key].numpy())


@pytest.mark.slow
def test_proto_call_leaves_every_bad_request_to_the_checked_path(exported):
    servable = Servable("census", 1, exported)
    sig = servable.signatures["serving_default"]
    inputs = {k: v.numpy() for k, v in _inputs(sig.fn.fn, ROWS).items()}
    n = len(ROWS)
    cut = tf.make_tensor_proto(inputs["age"])
    cut.tensor_content = cut.tensor_content[:-4]  # one float short of its shape
    bad = {
        "dtype": (tf.make_tensor_proto(inputs["age"].astype(np.float64)), "to be float"),
        "shape": (tf.make_tensor_proto(inputs["age"].reshape(-1)), "has shape"),
        "nan": (tf.make_tensor_proto(np.full((n, 1), np.nan, np.float32)), "non-finite"),
        "inf": (tf.make_tensor_proto(np.full((n, 1), -np.inf, np.float32)), "non-finite"),
        "content": (cut, "parsing error"),
    }
    for what, (proto, message) in bad.items():
        protos = _protos({k: tf.constant(v) for k, v in inputs.items()})
        protos["age"] = proto
        assert sig.proto_call(protos) is None, what
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "census"
        for k, p in protos.items():
            request.inputs[k].CopyFrom(p)
        with pytest.raises(ServingError) as e:
            Runner().predict_on(servable, request)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT, what
        assert "age" in e.value.message and message in e.value.message, (what, e.value.message)


@pytest.mark.slow
def test_a_model_error_is_raised_by_the_checked_path(exported):
    # rank takes a 1-row context; a 2-row one fails inside the model (its Assert).
    servable = Servable("census", 1, exported)
    sig = servable.signatures["rank"]
    inputs = {k: v.numpy() for k, v in _inputs(sig.fn.fn, ROWS).items()}
    inputs["age"] = inputs["age"][:2]
    protos = {k: tf.make_tensor_proto(v) for k, v in inputs.items()}
    assert sig.proto_call(protos) is None
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "census"
    request.model_spec.signature_name = "rank"
    for k, p in protos.items():
        request.inputs[k].CopyFrom(p)
    with pytest.raises(ServingError) as e:
        Runner().predict_on(servable, request)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "age must have 1 row" in e.value.message


@pytest.mark.slow
def test_batched_or_sliced_requests_do_not_take_the_proto_call(exported):
    servable = Servable("census", 1, exported)
    sig = servable.signatures["serving_default"]
    protos = _protos(_inputs(sig.fn.fn, ROWS))
    plain = Runner(batching_signatures={"serving_default"})
    assert plain._runs_whole(sig, protos)
    assert not Runner(batching_signatures={"serving_default"}, max_rows_per_call=2)._runs_whole(
        sig, protos
    )
    assert Runner(batching_signatures={"rank"}, max_rows_per_call=2)._runs_whole(sig, protos)
