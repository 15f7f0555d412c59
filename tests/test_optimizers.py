"""Tests of the sparse-aware FTRL and AdaGrad (wdl_tf.optimizers).

The reference is always the stock Keras optimizer: on dense gradients the fused kernels must
match it; on sparse (IndexedSlices) gradients with duplicate ids the reference is the stock
optimizer fed the dense equivalent gradient (``tf.convert_to_tensor`` sums the duplicates).
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import checkpoints, optimizers
from wdl_tf import model as model_lib
from wdl_tf.preprocessing import EncodedFeature

ATOL = 1e-6
STEPS = 5
SHAPE = (12, 3)

FTRL_PARAMS = {
    "defaults": dict(learning_rate=0.1),
    "l1": dict(learning_rate=0.1, l1_regularization_strength=0.05),
    "l2": dict(learning_rate=0.1, l2_regularization_strength=0.2),
    "beta": dict(learning_rate=0.1, beta=0.5),
    "power-0.7": dict(learning_rate=0.1, learning_rate_power=-0.7),
    "power0": dict(learning_rate=0.05, learning_rate_power=0.0),
    "accum0": dict(learning_rate=0.1, initial_accumulator_value=0.0),
    "accum1": dict(learning_rate=0.3, initial_accumulator_value=1.0),
    "all": dict(
        learning_rate=0.2,
        learning_rate_power=-0.7,
        initial_accumulator_value=0.5,
        l1_regularization_strength=0.02,
        l2_regularization_strength=0.05,
        beta=0.3,
    ),
}

# Keras' AdaGrad divides by √(n + ε); TensorFlow's fused kernels by √n + ε. The two differ
# for a large ε or for n starting at 0 with small gradients: these cases check we use Keras'.
ADAGRAD_PARAMS = [
    pytest.param(dict(learning_rate=0.1), id="defaults"),
    pytest.param(dict(learning_rate=0.5, initial_accumulator_value=1.0), id="lr0.5-accum1"),
    pytest.param(dict(learning_rate=0.05, initial_accumulator_value=0.01), id="accum0.01"),
    pytest.param(dict(learning_rate=0.1, epsilon=1e-8), id="eps1e-8"),
    pytest.param(
        dict(learning_rate=0.1, epsilon=1e-3),
        id="eps1e-3",
    ),
    pytest.param(
        dict(learning_rate=0.1, initial_accumulator_value=0.0),
        id="accum0",
    ),
]


# --------------------------------------------------------------------------------------------
# Helpers


def _dense_grads(rng, shape=SHAPE, steps=STEPS, spread=False):
    """Dense gradients; with ``spread`` their magnitudes span 1e-3 .. 1."""
    out = []
    for _ in range(steps):
        g = rng.normal(size=shape)
        if spread:
            g *= 10.0 ** rng.uniform(-3, 0, size=shape)
        out.append(tf.constant(g, tf.float32))
    return out


def _sparse_grads(rng, shape=SHAPE, steps=STEPS, batch=7, spread=False):
    """IndexedSlices gradients over a few rows, each with duplicate ids (int64 and int32)."""
    out = []
    for step in range(steps):
        ids = rng.integers(0, shape[0], size=batch)
        ids[1] = ids[0]  # at least one duplicate,
        ids[-1] = ids[2]  # two in fact
        values = rng.normal(size=(batch,) + shape[1:])
        if spread:
            values *= 10.0 ** rng.uniform(-3, 0, size=values.shape)
        out.append(
            tf.IndexedSlices(
                tf.constant(values, tf.float32),
                tf.constant(ids, tf.int64 if step % 2 else tf.int32),
                tf.constant(shape, tf.int64),
            )
        )
    return out


def _dense(grad):
    return tf.convert_to_tensor(grad)


def _slots(opt) -> dict[str, np.ndarray]:
    """The optimizer's per-variable slots (accumulators and, for FTRL, linears)."""
    out = {f"accumulator{i}": v.numpy() for i, v in enumerate(opt._accumulators)}
    for i, v in enumerate(getattr(opt, "_linears", [])):
        out[f"linear{i}"] = v.numpy()
    return out


def _assert_slots_close(ours, ref):
    a, b = _slots(ours), _slots(ref)
    assert a.keys() == b.keys()
    for k in a:
        _assert_slot_close(a[k], b[k], err_msg=k)


def _assert_slot_close(got, expected, err_msg=""):
    """Slots to 1e-6 of their scale: z sums terms of size |z| (and ~28 after 5 steps), and
    float32 rounds each of them to ~6e-8 relative, so a small z can carry ~4e-6 of rounding."""
    scale = max(1.0, float(np.nanmax(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=ATOL * scale, err_msg=err_msg)


def _run(opt, init, grads):
    var = keras.Variable(np.array(init, dtype="float32"))
    for g in grads:
        opt.apply([g], [var])
    return var.numpy()


# --------------------------------------------------------------------------------------------
# 1. Parity with the stock Keras optimizers


@pytest.mark.parametrize("kw", FTRL_PARAMS.values(), ids=FTRL_PARAMS.keys())
def test_ftrl_dense_parity(kw):
    rng = np.random.default_rng(1)
    init = rng.normal(size=SHAPE)
    grads = _dense_grads(rng)
    ours, ref = optimizers.Ftrl(**kw), keras.optimizers.Ftrl(**kw)
    np.testing.assert_allclose(_run(ours, init, grads), _run(ref, init, grads), atol=ATOL)
    _assert_slots_close(ours, ref)


@pytest.mark.parametrize("kw", FTRL_PARAMS.values(), ids=FTRL_PARAMS.keys())
def test_ftrl_sparse_parity_with_duplicate_ids(kw):
    """Zero-initialized (as wide weights are): then the sparse update is exact."""
    rng = np.random.default_rng(2)
    init = np.zeros(SHAPE)
    grads = _sparse_grads(rng)
    if kw.get("initial_accumulator_value", 0.1) == 0.0:
        # With n0 = 0, stock Keras computes w = 0 / (0^(-p)/α + 2λ2) = NaN for every row not
        # in the first batch (the sparse update leaves those rows at 0): let the first batch
        # cover every row so that the reference stays finite.
        ids = np.concatenate([np.arange(SHAPE[0]), [0, 5, 5]])
        values = rng.normal(size=(ids.size, SHAPE[1]))
        grads[0] = tf.IndexedSlices(
            tf.constant(values, tf.float32), tf.constant(ids), tf.constant(SHAPE)
        )
    ours, ref = optimizers.Ftrl(**kw), keras.optimizers.Ftrl(**kw)
    got = _run(ours, init, grads)
    expected = _run(ref, init, [_dense(g) for g in grads])
    np.testing.assert_allclose(got, expected, atol=ATOL)
    _assert_slots_close(ours, ref)


def test_ftrl_sparse_with_zero_initial_accumulator_leaves_absent_rows_at_zero():
    kw = dict(learning_rate=0.1, initial_accumulator_value=0.0)
    var = keras.Variable(np.zeros(SHAPE, "float32"))
    opt = optimizers.Ftrl(**kw)
    grad = _sparse_grads(np.random.default_rng(9), steps=1)[0]
    opt.apply([grad], [var])
    absent = np.setdiff1d(np.arange(SHAPE[0]), grad.indices.numpy())
    assert np.isfinite(var.numpy()).all()
    for got in (var.numpy(), *_slots(opt).values()):
        np.testing.assert_array_equal(got[absent], 0.0)


@pytest.mark.parametrize("kw", ADAGRAD_PARAMS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_adagrad_parity(kw, sparse):
    rng = np.random.default_rng(3)
    init = rng.normal(size=SHAPE)
    grads = (_sparse_grads if sparse else _dense_grads)(rng, spread=True)
    ours, ref = optimizers.Adagrad(**kw), keras.optimizers.Adagrad(**kw)
    got = _run(ours, init, grads)
    expected = _run(ref, init, [_dense(g) for g in grads])
    np.testing.assert_allclose(got, expected, atol=ATOL)
    _assert_slots_close(ours, ref)


def test_adagrad_epsilon_placement_single_step():
    """Where the ε placement matters most: n0 = 0, one gradient of 1e-3, ε = 1e-7.

    Keras: w1 = w0 − α·g/√(g² + ε) = −0.1·1e-3/√(1.1e-6) = −0.0953463
    TF kernel: w1 = w0 − α·g/(|g| + ε) = −0.1·1e-3/1.0001e-3 = −0.0999900
    """
    kw = dict(learning_rate=0.1, initial_accumulator_value=0.0, epsilon=1e-7)
    g = [tf.constant([1e-3])]
    expected = _run(keras.optimizers.Adagrad(**kw), [0.0], g)
    np.testing.assert_allclose(expected, [-0.1 * 1e-3 / math.sqrt(1e-6 + 1e-7)], rtol=1e-5)
    got = _run(optimizers.Adagrad(**kw), [0.0], g)  # −0.0999900
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize(
    "opt_cls, ref_cls",
    [(optimizers.Ftrl, keras.optimizers.Ftrl), (optimizers.Adagrad, keras.optimizers.Adagrad)],
    ids=["ftrl", "adagrad"],
)
def test_duplicate_ids_are_summed_before_squaring(opt_cls, ref_cls):
    """Id 1 twice with gradient 1: n = 0.1 + (1 + 1)² = 4.1, as the dense gradient gives.
    (Stock Keras fed the IndexedSlices itself squares each value: n = 0.1 + 1 + 1 = 2.1.)"""
    var = keras.Variable(np.zeros((3, 1), "float32"))
    opt = opt_cls(learning_rate=0.1)
    grad = tf.IndexedSlices(tf.constant([[1.0], [1.0]]), tf.constant([1, 1]), tf.constant([3, 1]))
    opt.apply([grad], [var])
    np.testing.assert_allclose(opt._accumulators[0].numpy()[:, 0], [0.1, 4.1, 0.1], rtol=1e-6)
    ref_var = keras.Variable(np.zeros((3, 1), "float32"))
    ref_cls(learning_rate=0.1).apply([_dense(grad)], [ref_var])
    np.testing.assert_allclose(var.numpy(), ref_var.numpy(), atol=ATOL)


# --------------------------------------------------------------------------------------------
# 2. l2_shrinkage_regularization_strength


@pytest.mark.parametrize(
    "kw",
    [
        dict(learning_rate=0.1, l2_shrinkage_regularization_strength=0.1),
        dict(
            learning_rate=0.2,
            learning_rate_power=-0.7,
            l1_regularization_strength=0.01,
            l2_regularization_strength=0.05,
            l2_shrinkage_regularization_strength=0.3,
            beta=0.2,
            initial_accumulator_value=0.5,
        ),
    ],
    ids=["shrink", "shrink-all"],
)
def test_ftrl_l2_shrinkage_dense_parity(kw):
    rng = np.random.default_rng(4)
    init = rng.normal(size=SHAPE)
    grads = _dense_grads(rng)
    ours, ref = optimizers.Ftrl(**kw), keras.optimizers.Ftrl(**kw)
    np.testing.assert_allclose(_run(ours, init, grads), _run(ref, init, grads), atol=ATOL)
    _assert_slots_close(ours, ref)


def test_ftrl_l2_shrinkage_sparse_is_lazy():
    """Sparse: absent rows keep variable and slots; the batch's rows are the stock update of a
    variable holding only those rows (with their slots) under their dense gradient."""
    kw = dict(
        learning_rate=0.2,
        l1_regularization_strength=0.01,
        l2_regularization_strength=0.02,
        l2_shrinkage_regularization_strength=0.25,
        beta=0.1,
    )
    rng = np.random.default_rng(5)
    var = keras.Variable(rng.normal(size=SHAPE).astype("float32"))  # w ≠ 0: shrinkage bites
    ours = optimizers.Ftrl(**kw)
    ours.build([var])
    for grad in _sparse_grads(rng, steps=3):
        before = {"var": var.numpy(), **_slots(ours)}
        ours.apply([grad], [var])
        after = {"var": var.numpy(), **_slots(ours)}
        rows = np.unique(grad.indices.numpy())
        absent = np.setdiff1d(np.arange(SHAPE[0]), rows)
        for k in before:
            np.testing.assert_array_equal(after[k][absent], before[k][absent], err_msg=k)
        # Reference: stock FTRL on a [len(rows), 3] variable with those rows' state.
        ref_var = keras.Variable(before["var"][rows])
        ref = keras.optimizers.Ftrl(**kw)
        ref.build([ref_var])
        ref._accumulators[0].assign(before["accumulator0"][rows])
        ref._linears[0].assign(before["linear0"][rows])
        ref.apply([tf.gather(_dense(grad), rows)], [ref_var])
        np.testing.assert_allclose(after["var"][rows], ref_var.numpy(), atol=ATOL)
        _assert_slot_close(after["accumulator0"][rows], ref._accumulators[0].numpy())
        _assert_slot_close(after["linear0"][rows], ref._linears[0].numpy())
    assert absent.size  # the last batch left rows out (and so did the others)


# --------------------------------------------------------------------------------------------
# 3. Closed form (McMahan et al. 2013, Algorithm 1)


def test_ftrl_sparse_step_matches_closed_form():
    """Per coordinate, with n0 = initial accumulator, λ2 = 2·(Keras l2), z0 = 0:

    n1 = n0 + g²,  σ = (√n1 − √n0)/α,  z1 = g − σ·w0,
    w1 = 0 if |z1| ≤ λ1 else −(z1 − sgn(z1)·λ1) / ((β + √n1)/α + λ2),
    with g the sum of the gradient values of a repeated id.
    """
    alpha, beta, l1, l2, n0 = 0.1, 0.3, 0.05, 0.02, 0.2
    rng = np.random.default_rng(6)
    w0 = rng.normal(size=(8, 2)).astype("float32")
    ids = np.array([3, 1, 3, 6, 1, 3])
    values = rng.normal(size=(6, 2)).astype("float32")
    values[3] = [0.01, -0.02]  # row 6 (once, small w0): |z| ≤ λ1 → w exactly 0
    w0[6] = [0.001, -0.001]
    var = keras.Variable(w0)
    opt = optimizers.Ftrl(
        learning_rate=alpha,
        beta=beta,
        l1_regularization_strength=l1,
        l2_regularization_strength=l2,
        initial_accumulator_value=n0,
    )
    opt.apply([tf.IndexedSlices(tf.constant(values), tf.constant(ids), tf.constant([8, 2]))], [var])

    g = np.zeros((8, 2))
    np.add.at(g, ids, values.astype("float64"))
    n1 = n0 + g * g
    sigma = (np.sqrt(n1) - np.sqrt(n0)) / alpha
    z1 = g - sigma * w0
    w1 = np.where(
        np.abs(z1) <= l1,
        0.0,
        -(z1 - np.sign(z1) * l1) / ((beta + np.sqrt(n1)) / alpha + 2 * l2),
    )
    touched = np.unique(ids)
    untouched = np.setdiff1d(np.arange(8), touched)
    assert (np.abs(z1[touched]) <= l1).any() and (np.abs(z1[touched]) > l1).any()
    np.testing.assert_allclose(var.numpy()[touched], w1[touched], rtol=1e-5, atol=ATOL)
    np.testing.assert_array_equal(var.numpy()[touched][np.abs(z1[touched]) <= l1], 0.0)
    np.testing.assert_allclose(opt._accumulators[0].numpy()[touched], n1[touched], rtol=1e-6)
    np.testing.assert_allclose(opt._linears[0].numpy()[touched], z1[touched], rtol=1e-5, atol=ATOL)
    # Rows outside the batch: untouched (w0, n0, z0).
    np.testing.assert_array_equal(var.numpy()[untouched], w0[untouched])
    np.testing.assert_array_equal(opt._accumulators[0].numpy()[untouched], np.float32(n0))
    np.testing.assert_array_equal(opt._linears[0].numpy()[untouched], 0.0)


# --------------------------------------------------------------------------------------------
# 4. Cost does not grow with the table (structural)

BIG = 1_000_000


def _big_table_case(opt_cls, **kw):
    rng = np.random.default_rng(7)
    init = rng.normal(size=(BIG, 1)).astype("float32")
    var = keras.Variable(init)
    opt = opt_cls(**kw)
    opt.build([var])
    ids = np.array([5, 999_999, 123_456, 5, 42])
    grad = tf.IndexedSlices(
        tf.constant(rng.normal(size=(5, 1)), tf.float32), tf.constant(ids), tf.constant([BIG, 1])
    )
    return init, var, opt, ids, grad


def _big_shapes(graph) -> list[str]:
    """Ops of a graph with an output whose size grows with the table (a dense pass)."""
    return [
        f"{op.type}:{op.name}"
        for op in graph.get_operations()
        for t in op.outputs
        if t.shape.rank and any(d == BIG for d in t.shape.as_list())
    ]


@pytest.mark.parametrize(
    "opt_cls, kw, kernel",
    [
        (
            optimizers.Adagrad,
            dict(learning_rate=0.1, initial_accumulator_value=0.1),
            "ResourceScatterSub",  # row-wise scatter ops (Keras' exact ε placement)
        ),
        (
            optimizers.Ftrl,
            dict(
                learning_rate=0.1,
                initial_accumulator_value=0.1,
                l2_shrinkage_regularization_strength=0.1,
            ),
            "ResourceSparseApplyFtrlV2",
        ),
    ],
    ids=["adagrad", "ftrl"],
)
def test_sparse_update_touches_only_the_batch_rows_of_a_big_table(opt_cls, kw, kernel):
    """Random initial values (a dense FTRL step would rewrite them, a dense AdaGrad step would
    at least read and write them): the rows outside the batch stay bit-for-bit, their slots
    at the initial values, and the traced update holds no tensor as tall as the table."""
    init, var, opt, ids, grad = _big_table_case(opt_cls, **kw)
    step = tf.function(lambda g: opt.apply([g], [var]))
    graph = step.get_concrete_function(grad).graph
    assert not _big_shapes(graph), _big_shapes(graph)
    assert kernel in {op.type for op in graph.get_operations()}
    step(grad)

    rows = np.unique(ids)
    outside = np.ones(BIG, bool)
    outside[rows] = False
    after = var.numpy()
    np.testing.assert_array_equal(after[outside], init[outside])  # exact, random init
    assert (after[rows] != init[rows]).all()
    accum = opt._accumulators[0].numpy()
    np.testing.assert_array_equal(accum[outside], np.float32(kw["initial_accumulator_value"]))
    assert (accum[rows] > kw["initial_accumulator_value"]).all()
    if opt_cls is optimizers.Ftrl:
        linear = opt._linears[0].numpy()
        np.testing.assert_array_equal(linear[outside], 0.0)


# --------------------------------------------------------------------------------------------
# 5. tf.function and MultiOptimizer / model.fit


@pytest.mark.parametrize(
    "ours_cls, ref_cls, kw, zero_init",
    [
        (optimizers.Ftrl, keras.optimizers.Ftrl, dict(learning_rate=0.1, beta=0.2), True),
        (optimizers.Adagrad, keras.optimizers.Adagrad, dict(learning_rate=0.1), False),
    ],
    ids=["ftrl", "adagrad"],
)
def test_update_in_tf_function_traced_once(ours_cls, ref_cls, kw, zero_init):
    """One trace, several calls, a sparse and a dense variable: same as the stock optimizer."""
    rng = np.random.default_rng(8)
    init = np.zeros(SHAPE) if zero_init else rng.normal(size=SHAPE)
    dense_init = rng.normal(size=(4,))
    sparse = [
        tf.IndexedSlices(g.values, tf.cast(g.indices, tf.int64), g.dense_shape)
        for g in _sparse_grads(rng)
    ]
    dense = _dense_grads(rng, shape=(4,))

    var = keras.Variable(init.astype("float32"))
    dense_var = keras.Variable(dense_init.astype("float32"))
    opt = ours_cls(**kw)
    opt.build([var, dense_var])
    traces = []

    @tf.function
    def step(values, ids, dense_grad):
        traces.append(1)
        grad = tf.IndexedSlices(values, ids, tf.constant(SHAPE, tf.int64))
        opt.apply([grad, dense_grad], [var, dense_var])

    for g, d in zip(sparse, dense):
        step(g.values, g.indices, d)
    assert len(traces) == 1 and step.experimental_get_tracing_count() == 1

    ref_var = keras.Variable(init.astype("float32"))
    ref_dense = keras.Variable(dense_init.astype("float32"))
    ref = ref_cls(**kw)
    ref.build([ref_var, ref_dense])
    for g, d in zip(sparse, dense):
        ref.apply([_dense(g), d], [ref_var, ref_dense])
    np.testing.assert_allclose(var.numpy(), ref_var.numpy(), atol=ATOL)
    np.testing.assert_allclose(dense_var.numpy(), ref_dense.numpy(), atol=ATOL)
    _assert_slots_close(opt, ref)


WIDE_FEATURES = [
    EncodedFeature("age", "dense", 1, wide=True, deep=True),
    EncodedFeature("city", "ids", 50, wide=True, deep=True, embedding_dim=4),
    EncodedFeature("apps", "multi_ids", 40, wide=True, deep=True, embedding_dim=3),
    EncodedFeature("apps_X_city", "multi_ids", 300, wide=True, deep=False),
]
SMALL = model_lib.ModelConfig(hidden_units=(8, 4), linear_l1=0.001, seed=3)


def _fit_data(n=8):
    rng = np.random.default_rng(10)
    x = {
        "age": rng.normal(size=(n, 1)).astype("float32"),
        "city": rng.integers(1, 10, size=(n, 1)),  # ids 1..9 of 50
        "apps": np.where(rng.random((n, 3)) < 0.3, 0, rng.integers(1, 12, size=(n, 3))),
        "apps_X_city": np.where(rng.random((n, 2)) < 0.3, 0, rng.integers(1, 60, size=(n, 2))),
    }
    x["apps"][:, 0] = np.maximum(x["apps"][:, 0], 1)  # every row has at least one app
    y = rng.integers(0, 2, size=(n, 1)).astype("float32")
    return x, y


def _small_model(config=SMALL, optimizer=None):
    keras.utils.set_random_seed(1)
    model = model_lib.build_model(WIDE_FEATURES, config)
    if optimizer is None:
        model_lib.compile_model(model, config)
    else:
        model.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy())
    model.optimizer.build(model.trainable_variables)
    return model


class _DenseGradient:
    """Feeds the stock update the dense equivalent of a sparse gradient (the stock optimizers
    square an IndexedSlices' values before summing its duplicate ids)."""

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        return super().update_step(gradient, variable, learning_rate)


class StockFtrl(_DenseGradient, keras.optimizers.Ftrl):
    pass


class StockAdagrad(_DenseGradient, keras.optimizers.Adagrad):
    pass


def _stock_multi_optimizer(config):
    """build_optimizer's wiring with the stock Keras optimizers (fed dense gradients)."""
    ftrl = StockFtrl(
        learning_rate=config.linear_learning_rate,
        l1_regularization_strength=config.linear_l1,
        l2_regularization_strength=config.linear_l2,
    )
    adagrad = StockAdagrad(learning_rate=config.dnn_learning_rate)
    return keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(
            default_optimizer=adagrad, optimizer_map={"wide/.*": ftrl, "deep/.*": adagrad}
        )
    )


def test_multi_optimizer_fit_updates_only_touched_rows(monkeypatch):
    """model.fit with build_optimizer: wide and embedding tables get IndexedSlices gradients,
    only their rows in the data move, and the result equals the stock Keras optimizers'."""
    seen = {}
    for cls in (optimizers.Ftrl, optimizers.Adagrad):
        original = cls.update_step

        def spy(self, gradient, variable, learning_rate, _original=original):
            path = getattr(variable, "path", None) or variable.name.split(":")[0]
            seen[path] = isinstance(gradient, tf.IndexedSlices)
            return _original(self, gradient, variable, learning_rate)

        monkeypatch.setattr(cls, "update_step", spy)

    x, y = _fit_data()
    model = _small_model()
    stock = _small_model(optimizer=_stock_multi_optimizer(SMALL))
    before = {v.path: v.numpy() for v in model.trainable_variables}
    for v, s in zip(model.trainable_variables, stock.trainable_variables):
        np.testing.assert_array_equal(v.numpy(), s.numpy(), err_msg=v.path)

    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    stock.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 4

    tables = {
        "wide/city": x["city"],
        "wide/apps": x["apps"],
        "wide/apps_X_city": x["apps_X_city"],
        "deep/emb_city": x["city"],
        "deep/emb_apps": x["apps"],
    }
    for path, ids in tables.items():
        assert seen[path], f"{path}: dense gradient"
        after = {v.path: v.numpy() for v in model.trainable_variables}[path]
        changed = np.flatnonzero((after != before[path]).any(axis=1))
        used = np.unique(ids[ids != 0])  # 0 is padding: its gradient is 0
        np.testing.assert_array_equal(changed, used, err_msg=path)
    assert not seen["wide/bias"] and not seen["deep/hidden_0/kernel"]

    for v, s in zip(model.trainable_variables, stock.trainable_variables):
        np.testing.assert_allclose(v.numpy(), s.numpy(), atol=ATOL, err_msg=v.path)


# --------------------------------------------------------------------------------------------
# 6. tf.distribute.MirroredStrategy (two logical CPUs: set before TF initializes, so in a
# fresh interpreter)

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, traceback
    from wdl_tf import startup
    startup.skip_keras_extras()
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from wdl_tf import optimizers

    SHAPE = (10, 2)
    CASES = {
        "ftrl": (optimizers.Ftrl, dict(learning_rate=0.1, l1_regularization_strength=0.01,
                                       l2_regularization_strength=0.01, beta=0.1), True),
        "adagrad": (optimizers.Adagrad, dict(learning_rate=0.1), False),
    }
    rng = np.random.default_rng(0)
    # Per step, per replica: a sparse gradient (ids repeated within and across replicas) and
    # a dense one.
    IDS = [[[1, 1, 4], [4, 7, 7]], [[0, 4, 9], [9, 9, 2]]]
    STEPS = [
        (rng.normal(size=(2, 3, 2)).astype("float32"), np.array(ids),
         rng.normal(size=(2, 3)).astype("float32"))
        for ids in IDS
    ]

    def state(opt, table, dense):
        out = {"table": table, "dense": dense}
        for i, v in enumerate(opt._accumulators):
            out[f"accumulator{i}"] = v
        for i, v in enumerate(getattr(opt, "_linears", [])):
            out[f"linear{i}"] = v
        return out

    def run_case(cls, kw, zero):
        init = np.zeros(SHAPE, "float32") if zero else rng.normal(size=SHAPE).astype("float32")
        dense_init = rng.normal(size=(3,)).astype("float32")
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            table = keras.Variable(init)
            dense = keras.Variable(dense_init)
            opt = cls(**kw)
            opt.build([table, dense])

        def replica_step(values, ids, dense_grads):
            r = tf.distribute.get_replica_context().replica_id_in_sync_group
            grad = tf.IndexedSlices(values[r], ids[r], tf.constant(SHAPE))
            opt.apply([grad, dense_grads[r]], [table, dense])

        @tf.function
        def step(values, ids, dense_grads):
            strategy.run(replica_step, args=(values, ids, dense_grads))

        for values, ids, dense_grads in STEPS:
            step(tf.constant(values), tf.constant(ids), tf.constant(dense_grads))

        # The same steps without a strategy, on the gradients summed over the replicas.
        ref_table, ref_dense = keras.Variable(init), keras.Variable(dense_init)
        ref = cls(**kw)
        ref.build([ref_table, ref_dense])
        for values, ids, dense_grads in STEPS:
            grad = tf.IndexedSlices(
                tf.constant(values.reshape(-1, SHAPE[1])), tf.constant(ids.reshape(-1)),
                tf.constant(SHAPE),
            )
            ref.apply([grad, tf.constant(dense_grads.sum(0))], [ref_table, ref_dense])

        got, expected = state(opt, table, dense), state(ref, ref_table, ref_dense)
        out = {"moved": bool(not np.array_equal(table.numpy(), init))}
        for k, v in got.items():
            copies = [c.numpy() for c in v.value.values]  # one per replica device
            out[k] = {
                "devices": sorted({c.device for c in v.value.values}),
                "replicas_equal": all(np.array_equal(copies[0], c) for c in copies[1:]),
                "max_diff": float(np.max(np.abs(copies[0] - expected[k].numpy()))),
            }
        return out

    result = {}
    for name, (cls, kw, zero) in CASES.items():
        try:
            result[name] = run_case(cls, kw, zero)
        except Exception:
            result[name] = {"error": traceback.format_exc()}
    print("RESULT " + json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def mirrored_result():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ftrl", "adagrad"])
def test_mirrored_strategy_matches_summed_gradient(mirrored_result, name):
    result = mirrored_result[name]
    assert "error" not in result, result.get("error")
    assert result.pop("moved")
    assert set(result) >= {"table", "dense", "accumulator0"}
    for key, r in result.items():
        assert len(r["devices"]) == 2, (key, r["devices"])
        assert r["replicas_equal"], key
        assert r["max_diff"] <= ATOL, (key, r["max_diff"])


# --------------------------------------------------------------------------------------------
# 7. Checkpoint → restore → identical next step


def test_checkpoint_restore_gives_identical_next_step(tmp_path):
    x, y = _fit_data(n=4)
    x = {k: tf.constant(v) for k, v in x.items()}
    a = _small_model()
    a.train_on_batch(x, y)
    path = checkpoints.make_checkpoint(a).save(str(tmp_path / "ckpt"))

    config = dataclasses.replace(SMALL, seed=11)  # other initial deep weights: restored over
    b = _small_model(config)
    assert any(
        not np.array_equal(va.numpy(), vb.numpy()) for va, vb in zip(a.variables, b.variables)
    )
    checkpoints.make_checkpoint(b).restore(path).assert_consumed()

    def everything(m):
        return {v.path: v.numpy() for v in [*m.variables, *m.optimizer.variables]}

    before = everything(a)
    assert any("wide_ftrl" in k and "linear" in k for k in before)
    assert any("deep_adagrad" in k and "accumulator" in k for k in before)
    for key, value in everything(b).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)

    a.train_on_batch(x, y)
    b.train_on_batch(x, y)
    got, expected = everything(b), everything(a)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert any(not np.array_equal(expected[k], before[k]) for k in expected)
    assert int(b.optimizer.iterations.numpy()) == 2
