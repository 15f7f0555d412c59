"""The optimizers of the paper (P5): FTRL for the wide part, AdaGrad for the deep part.

They are `keras.optimizers.Ftrl` / `Adagrad` with the same hyper-parameters and math, under
the project's names so the model wiring (`model.build_optimizer`) does not change when the
sparse-aware versions (TensorFlow's fused ``ResourceSparseApply*`` kernels) replace them.
"""

from __future__ import annotations

import keras


class Ftrl(keras.optimizers.Ftrl):
    """FTRL-Proximal (McMahan et al., 2013) for the wide part; see `keras.optimizers.Ftrl`."""


class Adagrad(keras.optimizers.Adagrad):
    """AdaGrad (Duchi et al., 2011) for the deep part; see `keras.optimizers.Adagrad`."""
