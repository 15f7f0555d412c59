"""The Wide & Deep model (Cheng et al., 2016), built with the Keras functional API.

    P(Y=1 | x) = σ(w_wideᵀ [x, φ(x)] + w_deepᵀ a(l_f) + b)            (paper eq. 3, P4)

The wide part is a linear model over sparse ids and crosses: one weight per id, summed per
feature (P1, P2). The deep part concatenates embeddings of the ids with the normalized
numerics and runs them through ReLU layers (P3). Both logits are added in one logistic
output and trained jointly. Every wide variable lives under ``wide/`` and every deep one under
``deep/``, so the optimizers (FTRL for wide, AdaGrad for deep, P5), warm start and inspection
select them by path.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from wdl_tf import optimizers as wdl_optimizers
from wdl_tf.config import LR_DECAYS, MODEL_TYPES, ModelConfig  # noqa: F401 - re-exported
from wdl_tf.preprocessing import PAD_ID, EncodedFeature


def _rows(table):
    """The tf.Variable behind a Keras table, for a sparse read.

    ``tf.gather`` on the Keras variable first reads the whole table into a tensor (and the
    next in-place sparse update then copies it: 36 ms per step for a [1M, 32] table);
    gathering from the tf.Variable is a ResourceGather of the batch's rows (0.55 ms). The
    gradient is an IndexedSlices either way.
    """
    return table.value if isinstance(table, keras.Variable) else table


def _pool(values: tf.Tensor, ids: tf.Tensor, combiner: str) -> tf.Tensor:
    """Pools [B, L, D] rows of a multivalent feature over its non-padding ids → [B, D]."""
    mask = tf.cast(tf.not_equal(ids, PAD_ID), values.dtype)[..., None]
    total = tf.reduce_sum(values * mask, axis=1)
    if combiner == "sum":
        return total
    count = tf.reduce_sum(mask, axis=1)
    if combiner == "sqrtn":
        return tf.math.divide_no_nan(total, tf.sqrt(count))
    return tf.math.divide_no_nan(total, count)


class WideLinear(keras.layers.Layer):
    """The wide part: y = Σ_f pool_f({w_f[id] : id ∈ x_f}) + Σ_d v_d · x_d (+ b).

    pool_f is the feature's ``wide_combiner``: the sum (the default) or the mean or sum/√n
    of its weights; a single-valued feature has one id, so every pool is its weight.

    One [size, 1] weight table per sparse feature or cross (``wide/<name>``), gathered so its
    gradient is sparse (IndexedSlices: only the rows in the batch change), plus one weight
    per dense numeric that feeds the wide part, plus the joint bias ``wide/bias``.
    Weights start at zero, as a linear model trained with FTRL does.
    """

    def __init__(self, features: list[EncodedFeature], use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.features = [f for f in features if f.wide]
        self.use_bias = use_bias

    def build(self, input_shape=None):
        self.tables = {}
        for f in self.features:
            self.tables[f.name] = self.add_weight(
                name=f.name, shape=(f.size, 1), initializer="zeros"
            )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros")

    def contributions(self, inputs) -> dict[str, tf.Tensor]:
        """Each wide feature's term of the logit, [B, 1]: its weights for the row's ids pooled
        by its ``wide_combiner`` (or weight · value for a dense numeric). `call` adds exactly
        these, so they are an exact decomposition of the wide logit (the ``explain``
        signature returns them)."""
        terms = {}
        for f in self.features:
            x = inputs[f.name]
            table = self.tables[f.name]
            if f.kind == "dense":
                terms[f.name] = x * tf.reshape(table, [1, 1])
            elif f.kind == "ids":
                terms[f.name] = tf.gather(_rows(table), x[:, 0])
            else:
                terms[f.name] = _pool(tf.gather(_rows(table), x), x, f.wide_combiner)
        return terms

    def call(self, inputs):
        logit = tf.add_n(list(self.contributions(inputs).values()))
        if self.use_bias:
            logit = logit + self.bias
        return logit


class DeepTower(keras.layers.Layer):
    """The deep part: [embeddings ‖ normalized numerics] → ReLU layers → one logit.

    Embedding tables ``deep/emb_<name>`` ([size, dim], random normal with stddev 1/√dim) are
    gathered, so their gradients are sparse too; multivalent ids are pooled by the feature's
    combiner. Hidden layers ``deep/hidden_<i>`` (optionally batch-normalized, then dropout),
    under the dtype policy ``hidden_dtype`` (`ModelConfig.hidden_dtype`); the logit layer is
    always float32, so the output and the explain signature's terms are float32.
    """

    def __init__(
        self,
        features: list[EncodedFeature],
        hidden_units: tuple[int, ...],
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_dim: int | None = None,
        use_bias: bool = True,
        seed: int = 0,
        hidden_dtype: str = "float32",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.features = [f for f in features if f.deep]
        self.embedding_dim = embedding_dim
        self.seed = seed
        self.hidden = []
        for i, units in enumerate(hidden_units):
            block = [
                keras.layers.Dense(
                    units,
                    use_bias=not batch_norm,
                    kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
                    dtype=hidden_dtype,
                    name=f"hidden_{i}",
                )
            ]
            if batch_norm:
                block.append(
                    keras.layers.BatchNormalization(dtype=hidden_dtype, name=f"batch_norm_{i}")
                )
            block.append(keras.layers.ReLU(dtype=hidden_dtype, name=f"relu_{i}"))
            if dropout:
                block.append(
                    keras.layers.Dropout(
                        dropout, seed=seed + i, dtype=hidden_dtype, name=f"dropout_{i}"
                    )
                )
            self.hidden.extend(block)
        self.logit = keras.layers.Dense(
            1,
            use_bias=use_bias,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + len(hidden_units)),
            name="logit",
        )

    def _dim(self, f: EncodedFeature) -> int:
        return self.embedding_dim or f.embedding_dim

    def build(self, input_shape=None):
        self.tables = {}
        width = 0
        for i, f in enumerate(self.features):
            if f.kind == "dense":
                width += 1
                continue
            dim = self._dim(f)
            self.tables[f.name] = self.add_weight(
                name=f"emb_{f.name}",
                shape=(f.size, dim),
                initializer=keras.initializers.RandomNormal(
                    stddev=dim**-0.5, seed=self.seed + 1000 + i
                ),
            )
            width += dim
        for layer in self.hidden + [self.logit]:
            layer.build((None, width))
            if isinstance(layer, keras.layers.Dense):
                width = layer.units

    def call(self, inputs, training=None):
        parts = []
        for f in self.features:
            x = inputs[f.name]
            if f.kind == "dense":
                parts.append(x)
            elif f.kind == "ids":
                parts.append(tf.gather(_rows(self.tables[f.name]), x[:, 0]))
            else:
                parts.append(_pool(tf.gather(_rows(self.tables[f.name]), x), x, f.combiner))
        h = tf.concat(parts, axis=1)
        for layer in self.hidden:
            h = layer(h, training=training)
        return self.logit(h)


class SamplingCorrection(keras.layers.Layer):
    """Adds ln(rate) to the logit at inference, when negatives were kept at ``rate``.

    A model trained on data whose negatives were down-sampled to a share ``rate`` predicts
    p = P(Y=1 | x, sampled); the rate on unsampled data is p / (p + (1 - p) / rate), which is
    exactly sigmoid(logit + ln rate). Training (``training=True``) sees the plain logit, so
    the loss matches the sampled data; evaluation and the export see the corrected one.
    """

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.offset = float(np.log(self.rate))

    def call(self, logit, training=None):
        if training:
            return logit
        return logit + self.offset

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


def hidden_compute_dtype(model: keras.Model) -> str:
    """The dtype the deep part's hidden layers compute in (``float32`` without a deep part):
    ``bfloat16`` under ``ModelConfig.hidden_dtype="mixed_bfloat16"``."""
    try:
        tower = model.get_layer("deep")
    except ValueError:
        return "float32"
    dtypes = {layer.compute_dtype for layer in tower.hidden}
    return "bfloat16" if "bfloat16" in dtypes else "float32"


def model_inputs(features: list[EncodedFeature]) -> dict[str, keras.KerasTensor]:
    """One keras.Input per encoded feature, with the dtype and shape the preprocessor emits."""
    inputs = {}
    for f in features:
        if f.kind == "dense":
            inputs[f.name] = keras.Input(shape=(1,), dtype="float32", name=f.name)
        elif f.kind == "ids":
            inputs[f.name] = keras.Input(shape=(1,), dtype="int64", name=f.name)
        else:
            inputs[f.name] = keras.Input(shape=(None,), dtype="int64", name=f.name)
    return inputs


def build_model(features: list[EncodedFeature], config: ModelConfig) -> keras.Model:
    """The functional model: encoded features → P(Y=1), shape [B, 1].

    Args:
      features: the preprocessor's `encoded_features` (names, kinds, table sizes).
      config: architecture; ``model_type`` selects wide, deep or both.
    """
    config.validate()
    used = [f for f in features if (config.has_wide and f.wide) or (config.has_deep and f.deep)]
    if config.has_wide and not any(f.wide for f in used):
        raise ValueError("model_type needs a wide part, but no feature has wide=true")
    if config.has_deep and not any(f.deep for f in used):
        raise ValueError("model_type needs a deep part, but no feature has deep=true")
    # Every encoded feature is an input, used or not: Keras maps a dict with extra keys to
    # inputs by position, so a model must accept exactly what the preprocessor emits.
    inputs = model_inputs(features)
    logits = []
    if config.has_wide:
        wide_inputs = {f.name: inputs[f.name] for f in used if f.wide}
        logits.append(WideLinear(used, use_bias=True, name="wide")(wide_inputs))
    if config.has_deep:
        deep_inputs = {f.name: inputs[f.name] for f in used if f.deep}
        tower = DeepTower(
            used,
            config.hidden_units,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            embedding_dim=config.embedding_dim,
            # The joint model has one bias b (the wide part's); deep-only needs its own.
            use_bias=not config.has_wide,
            seed=config.seed,
            hidden_dtype=config.hidden_dtype,
            name="deep",
        )
        logits.append(tower(deep_inputs))
    logit = logits[0] if len(logits) == 1 else keras.layers.Add(name="joint_logit")(logits)
    if config.negative_sampling_rate < 1.0:
        correction = SamplingCorrection(config.negative_sampling_rate, name="sampling_correction")
        logit = correction(logit)
    probability = keras.layers.Activation("sigmoid", name="probability", dtype="float32")(logit)
    return keras.Model(inputs=inputs, outputs=probability, name=f"wdl_{config.model_type}")


def _learning_rate(base: float, decay_steps: int | None):
    """A constant rate, or a cosine decay to 10% of it over ``decay_steps``."""
    if not decay_steps:
        return base
    return keras.optimizers.schedules.CosineDecay(base, decay_steps, alpha=0.1)


def build_optimizer(
    config: ModelConfig, decay_steps: int | None = None
) -> keras.optimizers.MultiOptimizer:
    """FTRL with L1/L2 for every ``wide/`` variable, AdaGrad for every ``deep/`` one (P5).

    Args:
      decay_steps: when given, both learning rates follow a cosine decay over this many steps
        (the final weights then settle instead of carrying the last batches' noise).
    """
    ftrl = wdl_optimizers.Ftrl(
        learning_rate=_learning_rate(config.linear_learning_rate, decay_steps),
        l1_regularization_strength=config.linear_l1,
        l2_regularization_strength=config.linear_l2,
        name="wide_ftrl",
    )
    adagrad = wdl_optimizers.Adagrad(
        learning_rate=_learning_rate(config.dnn_learning_rate, decay_steps),
        name="deep_adagrad",
    )
    optimizer_map = keras.optimizers.OptimizerMap(
        default_optimizer=adagrad, optimizer_map={"wide/.*": ftrl, "deep/.*": adagrad}
    )
    return keras.optimizers.MultiOptimizer(optimizer_map, name="wide_deep")


def check_variable_paths(model: keras.Model) -> None:
    """Fails if a trainable variable is outside ``wide/`` and ``deep/`` (it would get no
    deliberate optimizer)."""
    stray = [v.path for v in model.trainable_variables if not v.path.startswith(("wide/", "deep/"))]
    if stray:
        raise ValueError(f"trainable variables outside wide/ and deep/: {stray}")


def compile_model(
    model: keras.Model, config: ModelConfig, decay_steps: int | None = None
) -> keras.Model:
    """Compiles with the joint logistic loss, the two optimizers and streaming metrics."""
    check_variable_paths(model)
    model.compile(
        optimizer=build_optimizer(config, decay_steps),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.AUC(num_thresholds=2000, name="auc"),
            keras.metrics.BinaryAccuracy(name="accuracy"),
        ],
    )
    return model


def table_variables(model: keras.Model) -> list:
    """The id-indexed tables: wide weights per id and deep embeddings (sparse gradients)."""
    tables = []
    for name in ("wide", "deep"):
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue
        tables.extend(layer.tables.values())
    return tables


class WeightAverage:
    """An exponential moving average of the model's dense weights, swapped in at the end.

    With a constant learning rate the last steps' noise stays in the final weights: on
    census the mean prediction ended up to 0.04 away from the label rate depending on the
    seed. Averaging the dense variables (deep layers, dense wide weights, the bias) over the
    last ~1/(1 - momentum) steps removes it. The id tables are left out: averaging them
    would cost a pass over every row each step, which sparse updates exist to avoid.
    """

    def __init__(self, model: keras.Model, momentum: float):
        tables = {id(v) for v in table_variables(model)}
        self.momentum = momentum
        self.variables = [v for v in model.trainable_variables if id(v) not in tables]
        self.averages = [
            tf.Variable(v.value, trainable=False, name=v.path.replace("/", ".") + ".average")
            for v in self.variables
        ]
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="average_steps")

    @tf.function(autograph=False)  # no branch on a tensor: traced as written
    def update(self) -> None:
        # The first update copies the weights; later ones move the average towards them.
        m = tf.where(self.steps > 0, self.momentum, 0.0)
        for v, a in zip(self.variables, self.averages):
            a.assign(m * a + (1.0 - m) * v.value)
        self.steps.assign_add(1)

    def apply(self) -> None:
        """Sets the model's dense weights to their averages (no-op before any update)."""
        if int(self.steps.numpy()) == 0:
            return
        for v, a in zip(self.variables, self.averages):
            v.assign(a)


class WeightAverageCallback(keras.callbacks.Callback):
    """Updates a `WeightAverage` after every batch and applies it when the last epoch ends.

    Place it before the checkpoint callback: the final checkpoint then holds the averaged
    weights, so evaluation, export and a later warm start all see the same model.
    """

    def __init__(self, average: WeightAverage, final_epoch: int):
        super().__init__()
        self.average = average
        self.final_epoch = final_epoch

    def on_train_batch_end(self, batch, logs=None):
        self.average.update()

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.final_epoch:
            self.average.apply()
