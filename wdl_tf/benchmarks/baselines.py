"""The models wdl_tf's training speed is compared with, built the way their libraries intend.

(b) wdl_tf's model with stock Keras 3 optimizers in the same MultiOptimizer, and (c)
tf_keras's ``WideDeepModel`` of the same architecture: the same math, so a difference in
examples/s is the implementation's. tf_keras is imported inside the functions: it is optional
and slow to import.
"""

from __future__ import annotations

from wdl_tf.benchmarks.train_settings import Settings


def compile_stock(model, cfg) -> None:
    """`model.compile_model` with stock Keras 3 Ftrl/Adagrad in the same MultiOptimizer."""
    import keras

    from wdl_tf import model as model_lib

    model_lib.check_variable_paths(model)
    ftrl = keras.optimizers.Ftrl(
        learning_rate=cfg.linear_learning_rate,
        l1_regularization_strength=cfg.linear_l1,
        l2_regularization_strength=cfg.linear_l2,
        name="wide_ftrl",
    )
    adagrad = keras.optimizers.Adagrad(learning_rate=cfg.dnn_learning_rate, name="deep_adagrad")
    optimizer_map = keras.optimizers.OptimizerMap(
        default_optimizer=adagrad, optimizer_map={"wide/.*": ftrl, "deep/.*": adagrad}
    )
    model.compile(
        optimizer=keras.optimizers.MultiOptimizer(optimizer_map, name="wide_deep"),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.AUC(num_thresholds=2000, name="auc"),
            keras.metrics.BinaryAccuracy(name="accuracy"),
        ],
    )


def build_tf_keras_model(features, cfg, optimizers: str):
    """tf_keras.experimental.WideDeepModel with wdl_tf's architecture and optimizers.

    Wide: `LinearModel(units=1)` over one one-hot SparseTensor [B, size] per wide id feature
    (its Dense kernels are [size, 1] tables looked up by `embedding_lookup_sparse`: one weight
    per id, sparse gradients, zero init, one bias). Deep: a functional tf_keras model with
    `Embedding(size, dim)` (normal init, stddev 1/√dim) per categorical, concatenated with the
    normalized numerics, ReLU layers (Glorot uniform) and a bias-free logit; sigmoid of the
    sum. FTRL (L1, L2) for the linear model, AdaGrad for the DNN, as ``optimizer=[...]``.
    ``cfg.hidden_dtype`` is the ReLU layers' dtype policy, as in wdl_tf's tower (tf_keras
    layers take the same policy names).
    """
    import tf_keras

    deep = [f for f in features if f.deep]
    inputs, parts = {}, []
    for i, f in enumerate(deep):
        if f.kind == "dense":
            inputs[f.name] = tf_keras.Input((1,), dtype="float32", name=f.name)
            parts.append(inputs[f.name])
        elif f.kind == "ids":
            dim = cfg.embedding_dim or f.embedding_dim
            inputs[f.name] = tf_keras.Input((1,), dtype="int64", name=f.name)
            embedded = tf_keras.layers.Embedding(
                f.size,
                dim,
                embeddings_initializer=tf_keras.initializers.RandomNormal(
                    stddev=dim**-0.5, seed=cfg.seed + 1000 + i
                ),
                name=f"emb_{f.name}",
            )(inputs[f.name])
            parts.append(tf_keras.layers.Flatten()(embedded))
        else:
            raise ValueError(f"{f.name}: kind {f.kind} is not supported by this benchmark")
    h = tf_keras.layers.Concatenate()(parts)
    for i, units in enumerate(cfg.hidden_units):
        h = tf_keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=tf_keras.initializers.GlorotUniform(seed=cfg.seed + i),
            dtype=cfg.hidden_dtype,
            name=f"hidden_{i}",
        )(h)
    logit = tf_keras.layers.Dense(
        1,
        use_bias=False,
        kernel_initializer=tf_keras.initializers.GlorotUniform(
            seed=cfg.seed + len(cfg.hidden_units)
        ),
        name="logit",
    )(h)
    dnn = tf_keras.Model(inputs, logit, name="dnn")
    linear = tf_keras.experimental.LinearModel(units=1, use_bias=True, name="linear")
    model = tf_keras.experimental.WideDeepModel(linear, dnn, activation="sigmoid")
    opt = tf_keras.optimizers.legacy if optimizers == "legacy" else tf_keras.optimizers
    model.compile(
        optimizer=[
            opt.Ftrl(
                learning_rate=cfg.linear_learning_rate,
                l1_regularization_strength=cfg.linear_l1,
                l2_regularization_strength=cfg.linear_l2,
            ),
            opt.Adagrad(learning_rate=cfg.dnn_learning_rate),
        ],
        loss=tf_keras.losses.BinaryCrossentropy(),
        metrics=[
            tf_keras.metrics.AUC(num_thresholds=2000, name="auc"),
            tf_keras.metrics.BinaryAccuracy(name="accuracy"),
        ],
    )
    return model


def wide_deep_inputs(features):
    """A dataset map: encoded batch → ((linear inputs, dnn inputs), label) for WideDeepModel;
    each wide id feature becomes a one-hot SparseTensor [B, size]."""
    import tensorflow as tf

    wide = [f for f in features if f.wide]
    deep = [f for f in features if f.deep]

    def convert(x, y):
        linear = {}
        for f in wide:
            if f.kind == "dense":
                linear[f.name] = x[f.name]
                continue
            if f.kind != "ids":
                raise ValueError(f"{f.name}: kind {f.kind} is not supported by this benchmark")
            ids = tf.reshape(x[f.name], [-1])
            n = tf.shape(ids, out_type=tf.int64)[0]
            linear[f.name] = tf.SparseTensor(
                indices=tf.stack([tf.range(n), ids], axis=1),
                values=tf.ones_like(ids, tf.float32),
                dense_shape=tf.stack([n, tf.constant(f.size, tf.int64)]),
            )
        return (linear, {f.name: x[f.name] for f in deep}), y

    return convert


def tf_keras_description(settings: Settings) -> str:
    kind = (
        "tf_keras.optimizers.legacy.Ftrl/Adagrad (Keras 2's fused sparse kernels)"
        if settings.tf_keras_optimizers == "legacy"
        else "tf_keras.optimizers.Ftrl/Adagrad (its Ftrl applies sparse gradients densely)"
    )
    return (
        "tf_keras.experimental.WideDeepModel(LinearModel, DNN, activation='sigmoid'): the linear "
        "model is tf_keras.experimental.LinearModel(units=1) over one one-hot SparseTensor "
        f"[B, size] per wide id feature ({settings.numeric_features} numeric bucket ids, "
        f"{settings.categorical_features} categoricals, their crosses): its "
        "Dense kernels [size, 1] are read by embedding_lookup_sparse, i.e. one zero-initialized "
        "weight per id with sparse gradients, plus one bias; the DNN is a functional tf_keras "
        "model: Embedding(size, dim) per categorical (normal, stddev 1/√dim), concatenated with "
        f"the {settings.numeric_features} normalized numerics, Dense ReLU layers (Glorot "
        "uniform) and a bias-free logit. "
        f"compile(optimizer=[Ftrl(L1, L2), Adagrad]) with {kind}, same learning rates, binary "
        "cross-entropy, AUC and accuracy metrics. tf_keras's legacy Adagrad puts ε outside the "
        "square root (Keras 3 inside); otherwise the math is the same."
    )
