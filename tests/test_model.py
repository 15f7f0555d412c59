"""Tests of the Wide & Deep model: structure, optimizer wiring, FTRL math, checkpoints."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import checkpoints, optimizers
from wdl_tf import model as model_lib
from wdl_tf.preprocessing import EncodedFeature

FEATURES = [
    EncodedFeature("age", "dense", 1, wide=False, deep=True),
    EncodedFeature("age_bucket", "ids", 5, wide=True, deep=False),
    EncodedFeature("city", "ids", 7, wide=True, deep=True, embedding_dim=4),
    EncodedFeature("apps", "multi_ids", 6, wide=True, deep=True, embedding_dim=3),
    EncodedFeature("apps_X_city", "multi_ids", 11, wide=True, deep=False),
]


def _batch():
    return {
        "age": tf.constant([[0.5], [0.25]]),
        "age_bucket": tf.constant([[1], [4]], tf.int64),
        "city": tf.constant([[2], [2]], tf.int64),
        "apps": tf.constant([[1, 3, 0], [5, 0, 0]], tf.int64),
        "apps_X_city": tf.constant([[7, 9, 0], [10, 0, 0]], tf.int64),
    }


def _config(**kw):
    return model_lib.ModelConfig(hidden_units=(8, 4), **kw)


def test_variable_paths_split_into_wide_and_deep():
    model = model_lib.build_model(FEATURES, _config())
    paths = {v.path for v in model.trainable_variables}
    wide = {p for p in paths if p.startswith("wide/")}
    assert wide == {"wide/age_bucket", "wide/city", "wide/apps", "wide/apps_X_city", "wide/bias"}
    assert "deep/emb_city" in paths and "deep/emb_apps" in paths
    assert "deep/hidden_0/kernel" in paths and "deep/logit/kernel" in paths
    # The joint model has one bias (the wide one): the deep logit has none.
    assert "deep/logit/bias" not in paths
    assert all(p.startswith(("wide/", "deep/")) for p in paths)


@pytest.mark.parametrize(
    "model_type, has_wide, has_deep", [("wide", True, False), ("deep", False, True)]
)
def test_wide_only_and_deep_only(model_type, has_wide, has_deep):
    model = model_lib.build_model(FEATURES, _config(model_type=model_type))
    paths = [v.path for v in model.trainable_variables]
    assert any(p.startswith("wide/") for p in paths) == has_wide
    assert any(p.startswith("deep/") for p in paths) == has_deep
    out = model(_batch())
    assert out.shape == (2, 1)
    if model_type == "deep":
        assert "deep/logit/bias" in paths


def test_wide_logit_sums_one_weight_per_id():
    """With hand-set weights, the wide logit is the sum of the ids' weights plus the bias."""
    model = model_lib.build_model(FEATURES, _config(model_type="wide"))
    wide = model.get_layer("wide")
    for name, table in wide.tables.items():
        # weight of id i in feature with index k = (k + 1) * 0.01 * i
        k = list(wide.tables).index(name)
        table.assign((k + 1) * 0.01 * np.arange(table.shape[0], dtype="float32")[:, None])
    wide.bias.assign([0.5])
    order = list(wide.tables)
    w = {n: (order.index(n) + 1) * 0.01 for n in order}
    # Row 0: age_bucket 1, city 2, apps {1, 3} (0 is padding), apps_X_city {7, 9}.
    row0 = w["age_bucket"] * 1 + w["city"] * 2 + w["apps"] * (1 + 3) + w["apps_X_city"] * 16
    row1 = w["age_bucket"] * 4 + w["city"] * 2 + w["apps"] * 5 + w["apps_X_city"] * 10
    logits = np.log(model(_batch()).numpy() / (1 - model(_batch()).numpy())).reshape(-1)
    np.testing.assert_allclose(logits, [row0 + 0.5, row1 + 0.5], rtol=1e-4)


def test_wide_combiner_mean_averages_a_lists_weights():
    """wide_combiner="mean": a list's term is the mean of its ids' weights (padding not
    counted), a single-valued feature's term is its one weight whatever its combiner."""
    features = [
        EncodedFeature("city", "ids", 7, wide=True, deep=False, wide_combiner="mean"),
        EncodedFeature("apps", "multi_ids", 6, wide=True, deep=False, wide_combiner="mean"),
        EncodedFeature("apps_X_city", "multi_ids", 11, wide=True, deep=False),  # sum
    ]
    wide = model_lib.WideLinear(features, name="wide")
    wide.build()
    for table in wide.tables.values():
        table.assign(np.arange(table.shape[0], dtype="float32")[:, None])  # w[i] = i
    wide.bias.assign([0.0])
    batch = _batch()
    terms = {k: v.numpy().reshape(-1) for k, v in wide.contributions(batch).items()}
    np.testing.assert_allclose(terms["city"], [2.0, 2.0])
    np.testing.assert_allclose(terms["apps"], [(1 + 3) / 2, 5.0])  # ids {1, 3} and {5}
    np.testing.assert_allclose(terms["apps_X_city"], [7 + 9, 10.0])
    np.testing.assert_allclose(wide(batch).numpy().reshape(-1), [2 + 2 + 16, 2 + 5 + 10])


def test_multivalent_mean_combiner_ignores_padding():
    features = [EncodedFeature("apps", "multi_ids", 4, wide=False, deep=True, embedding_dim=2)]
    tower = model_lib.DeepTower(features, hidden_units=(), name="deep")
    tower.build()
    tower.tables["apps"].assign([[100.0, 100.0], [1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])
    pooled = model_lib._pool(
        tf.gather(tower.tables["apps"], tf.constant([[1, 2, 0], [3, 0, 0], [0, 0, 0]])),
        tf.constant([[1, 2, 0], [3, 0, 0], [0, 0, 0]]),
        "mean",
    ).numpy()
    # Means over the non-zero ids: (1,2)+(3,6) → (2,4); (5,10); an empty list → zeros.
    np.testing.assert_allclose(pooled, [[2.0, 4.0], [5.0, 10.0], [0.0, 0.0]])


def test_wide_variables_get_ftrl_and_deep_ones_adagrad():
    config = _config(linear_l1=0.01)
    model = model_lib.compile_model(model_lib.build_model(FEATURES, config), config)
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.MultiOptimizer)
    opt.build(model.trainable_variables)
    for v in model.trainable_variables:
        chosen = opt._optimizer_map(v)
        expected = optimizers.Ftrl if v.path.startswith("wide/") else optimizers.Adagrad
        assert isinstance(chosen, expected), v.path
    ftrl = next(o for o in opt.optimizers if isinstance(o, optimizers.Ftrl))
    assert ftrl.l1_regularization_strength == pytest.approx(0.01)


def test_one_ftrl_step_matches_closed_form():
    """FTRL-Proximal (McMahan et al. 2013, Algorithm 1) with n0 = initial accumulator.

    z = g - σ w0,  σ = (√n1 − √n0)/α,  n1 = n0 + g²,
    w1 = 0 if |z| ≤ λ1 else −(z − sgn(z) λ1) / (√n1/α + 2 λ2)   (Keras' l2 is λ2/2).
    """
    alpha, l1, l2, n0 = 0.1, 0.01, 0.02, 0.1
    w0 = np.array([0.2, 0.0, -0.3], dtype="float32")
    g = np.array([0.5, 0.005, -1.0], dtype="float32")
    var = keras.Variable(w0)
    opt = optimizers.Ftrl(
        learning_rate=alpha,
        l1_regularization_strength=l1,
        l2_regularization_strength=l2,
        initial_accumulator_value=n0,
    )
    opt.apply([tf.constant(g)], [var])
    expected = []
    for wi, gi in zip(w0, g):
        n1 = n0 + gi * gi
        sigma = (math.sqrt(n1) - math.sqrt(n0)) / alpha
        z = gi - sigma * wi
        if abs(z) <= l1:
            expected.append(0.0)
        else:
            expected.append(-(z - math.copysign(l1, z)) / (math.sqrt(n1) / alpha + 2 * l2))
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert var.numpy()[1] == 0.0  # |z| = 0.005 ≤ λ1: L1 makes the weight exactly zero


def test_checkpoint_restores_weights_and_both_optimizers(tmp_path):
    config = _config()
    x, y = _batch(), tf.constant([[1.0], [0.0]])

    def fresh():
        keras.utils.set_random_seed(1)
        m = model_lib.compile_model(model_lib.build_model(FEATURES, config), config)
        m.optimizer.build(m.trainable_variables)
        return m

    a = fresh()
    a.train_on_batch(x, y)
    a.train_on_batch(x, y)
    path = checkpoints.make_checkpoint(a).save(str(tmp_path / "ckpt"))
    b = fresh()
    checkpoints.make_checkpoint(b).restore(path).assert_consumed()
    slots_a = {v.path: v.numpy() for v in a.optimizer.variables}
    slots_b = {v.path: v.numpy() for v in b.optimizer.variables}
    assert slots_a.keys() == slots_b.keys()
    assert any("wide_ftrl" in k for k in slots_a) and any("deep_adagrad" in k for k in slots_a)
    for k in slots_a:
        np.testing.assert_array_equal(slots_a[k], slots_b[k], err_msg=k)
    # The next step from the restored state is identical.
    a.train_on_batch(x, y)
    b.train_on_batch(x, y)
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, err_msg=va.path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model_type": "linear"}, "model_type: unknown value 'linear'"),
        ({"hidden_units": (8, 0)}, "hidden_units"),
        ({"dropout": 1.5}, "dropout"),
        ({"linear_learning_rate": 0.0}, "linear_learning_rate"),
        ({"linear_l1": -1.0}, "linear_l1"),
        (
            {"hidden_dtype": "float16"},
            r"hidden_dtype: unknown value 'float16'; allowed values are \['float32', "
            r"'mixed_bfloat16'\]",
        ),
    ],
)
def test_bad_model_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        model_lib.ModelConfig(**{"hidden_units": (8,), **kwargs}).validate()


def test_weight_average_covers_dense_weights_not_tables():
    model = model_lib.build_model(FEATURES, _config())
    average = model_lib.WeightAverage(model, momentum=0.5)
    paths = {v.path for v in average.variables}
    assert "deep/hidden_0/kernel" in paths and "wide/bias" in paths
    # Tables (one weight or embedding per id) are not averaged: that would cost a full pass.
    assert not {"wide/city", "wide/apps_X_city", "deep/emb_city"} & paths
    bias = model.get_layer("wide").bias
    bias.assign([1.0])
    average.update()  # the first update copies: 1
    bias.assign([2.0])
    average.update()  # 0.5 · 1 + 0.5 · 2 = 1.5
    bias.assign([4.0])
    average.update()  # 0.5 · 1.5 + 0.5 · 4 = 2.75
    average.apply()
    np.testing.assert_allclose(bias.numpy(), [2.75])


def test_weight_average_before_any_update_changes_nothing():
    model = model_lib.build_model(FEATURES, _config())
    bias = model.get_layer("wide").bias
    bias.assign([0.3])
    average = model_lib.WeightAverage(model, momentum=0.9)
    bias.assign([0.7])
    average.apply()
    np.testing.assert_allclose(bias.numpy(), [0.7])


def test_mixed_bfloat16_hidden_layers_round_the_tower_and_keep_float32_weights():
    """``hidden_dtype="mixed_bfloat16"``: the hidden layers compute in bfloat16 over the same
    float32 variables (so checkpoints interchange), while the output stays float32."""
    full = model_lib.build_model(FEATURES, _config())
    half = model_lib.build_model(FEATURES, _config(hidden_dtype="mixed_bfloat16"))
    assert model_lib.hidden_compute_dtype(full) == "float32"
    assert model_lib.hidden_compute_dtype(half) == "bfloat16"
    wide_only = model_lib.build_model(FEATURES, _config(model_type="wide"))
    assert model_lib.hidden_compute_dtype(wide_only) == "float32"
    assert [(v.path, v.shape, v.dtype) for v in full.weights] == [
        (v.path, v.shape, v.dtype) for v in half.weights
    ]
    assert all(v.dtype == "float32" for v in half.weights)
    tower = half.get_layer("deep")
    assert {layer.compute_dtype for layer in tower.hidden} == {"bfloat16"}
    assert tower.logit.compute_dtype == "float32"

    # Weights larger than the initializers give, so that bfloat16's rounding shows in the
    # deep logit (the tower's output, compared before the sigmoid flattens it).
    rng = np.random.default_rng(0)
    for v in full.weights:
        v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))
    half.set_weights(full.get_weights())
    batch = _batch()
    deep_inputs = {f.name: batch[f.name] for f in FEATURES if f.deep}
    deep_full = full.get_layer("deep")(deep_inputs).numpy()
    deep_half = tower(deep_inputs).numpy()
    assert deep_half.dtype == np.float32 and half(batch).dtype == "float32"

    # The same tower by hand, in float32, each hidden layer's inputs, weights and outputs
    # rounded to bfloat16 (8 significant bits).
    def bf16(t):
        return tf.cast(tf.cast(t, tf.bfloat16), tf.float32)

    apps = batch["apps"]
    mask = tf.cast(apps != 0, tf.float32)[..., None]
    x = tf.concat(
        [
            batch["age"],
            tf.gather(tower.tables["city"], batch["city"][:, 0]),
            tf.reduce_sum(tf.gather(tower.tables["apps"], apps) * mask, 1)
            / tf.reduce_sum(mask, 1),  # the mean combiner
        ],
        axis=1,
    )
    for layer in tower.hidden:
        if isinstance(layer, keras.layers.Dense):
            x = tf.nn.relu(bf16(bf16(tf.matmul(bf16(x), bf16(layer.kernel))) + bf16(layer.bias)))
    by_hand = tf.matmul(x, tower.logit.kernel).numpy()
    # The rounding is where the hand computation puts it: bfloat16's relative error 2^-8
    # per value, far from the float32 tower.
    rounding = np.abs(deep_half - deep_full).max()
    assert rounding > 1e-3 * np.abs(deep_full).max()
    np.testing.assert_allclose(deep_half, by_hand, atol=rounding / 10)
