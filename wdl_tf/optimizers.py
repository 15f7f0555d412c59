"""Sparse-aware FTRL and AdaGrad: the paper's optimizers (P5) at a cost that does not grow
with the size of the tables.

Keras 3's `Ftrl` and `Adagrad` turn a sparse (IndexedSlices) gradient — what a `tf.gather`
of a wide weight table or an embedding table produces — into a dense update of the whole
table: one FTRL step on a 1-column table took 0.9 ms at 10K rows and 84 ms at 4M rows
(docs/design.md §4). These subclasses keep the same hyper-parameters, slots and math, but apply
a sparse gradient to the rows in the batch only, after summing the values of duplicate ids
(a dense gradient sums them too): FTRL through TensorFlow's fused ``ResourceSparseApplyFtrlV2``
(and ``ResourceApplyFtrlV2`` for dense gradients), AdaGrad through row-wise scatter ops that
keep Keras' exact ε placement.

On a backend other than TensorFlow they fall back to the stock Keras update.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _tf_variable(variable) -> tf.Variable:
    """The tf.Variable behind a Keras variable (or the variable itself)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _unique_rows(gradient: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor]:
    """(summed values, unique indices) of a sparse gradient with possibly repeated ids."""
    unique, positions = tf.unique(gradient.indices)
    summed = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(unique)[0])
    return summed, unique


def _uses_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


class Ftrl(keras.optimizers.Ftrl):
    """FTRL-Proximal (McMahan et al., 2013) for the wide part; `keras.optimizers.Ftrl`'s math.

    Per coordinate with accumulator n, linear term z, gradient g, lr α, power p (-0.5):
    n' = n + g², z += g + 2·λ_shrink·w − (n'^(−p) − n^(−p))/α · w,
    w = (clip(z, −λ1, λ1) − z) / (n'^(−p)/α + 2·λ2'), λ2' = λ2 + β/(2α).
    A sparse gradient updates only its rows. For a row absent from the batch (g = 0) FTRL
    leaves n and z unchanged and recomputes w = f(z, n), which is w itself once the row has
    been updated once or when it starts at zero (wide weights do): skipping it is exact. The
    one difference is ``l2_shrinkage_regularization_strength``: its 2·λ_shrink·w term moves z
    for every row with w ≠ 0 in a dense update, but only for the batch's rows in a sparse
    one (lazy shrinkage, as TensorFlow's own sparse FTRL kernel does).
    """

    def update_step(self, gradient, variable, learning_rate):
        if not _uses_tensorflow():
            return super().update_step(gradient, variable, learning_rate)
        var = _tf_variable(variable)
        index = self._get_variable_index(variable)
        accum = _tf_variable(self._accumulators[index])
        linear = _tf_variable(self._linears[index])
        lr = tf.cast(learning_rate, var.dtype)
        args = dict(
            var=var.handle,
            accum=accum.handle,
            linear=linear.handle,
            lr=lr,
            l1=tf.cast(self.l1_regularization_strength, var.dtype),
            # Keras folds beta into L2 the same way (ftrl.py: l2 + beta / (2 lr)).
            l2=tf.cast(self.l2_regularization_strength, var.dtype) + self.beta / (2.0 * lr),
            l2_shrinkage=tf.cast(self.l2_shrinkage_regularization_strength, var.dtype),
            lr_power=tf.cast(self.learning_rate_power, var.dtype),
            use_locking=False,
        )
        if isinstance(gradient, tf.IndexedSlices):
            values, indices = _unique_rows(gradient)
            tf.raw_ops.ResourceSparseApplyFtrlV2(
                grad=tf.cast(values, var.dtype), indices=indices, **args
            )
        else:
            tf.raw_ops.ResourceApplyFtrlV2(grad=tf.cast(gradient, var.dtype), **args)


class Adagrad(keras.optimizers.Adagrad):
    """AdaGrad (Duchi et al., 2011) for the deep part; exactly `keras.optimizers.Adagrad`'s math.

    n += g², w −= α·g / √(n + ε). A sparse gradient updates only its rows (absent rows have
    g = 0: no change), with three row-wise ops (scatter-add g², gather n, scatter-sub the
    step). TensorFlow's fused ``ResourceSparseApplyAdagradV2`` is not used here: it computes
    α·g / (√n + ε), which differs from Keras by up to 5% when the accumulator starts at 0.
    Dense gradients take Keras' own update.
    """

    def update_step(self, gradient, variable, learning_rate):
        if not (_uses_tensorflow() and isinstance(gradient, tf.IndexedSlices)):
            return super().update_step(gradient, variable, learning_rate)
        var = _tf_variable(variable)
        accum = _tf_variable(self._accumulators[self._get_variable_index(variable)])
        values, indices = _unique_rows(gradient)
        values = tf.cast(values, var.dtype)
        accum.scatter_add(tf.IndexedSlices(tf.square(values), indices))
        denominator = tf.sqrt(tf.gather(accum, indices) + tf.cast(self.epsilon, var.dtype))
        step = tf.cast(learning_rate, var.dtype) * values / denominator
        var.scatter_sub(tf.IndexedSlices(step, indices))
