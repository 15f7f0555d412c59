"""What a wdl_tf main does first: start TensorFlow without Keras' optional integrations.

Keras, which ``import tensorflow`` loads too, imports scikit-learn, matplotlib and IPython at
import time whenever they are installed, for integrations wdl_tf never uses: its scikit-learn
estimator wrappers (``keras.wrappers``), ``keras.visualization.plot_image_gallery`` and the
notebook display of ``keras.saving.KerasFileEditor``. In an environment with the ``tune`` and
``report`` extras that is about a third of a process's start: ``import wdl_tf.model`` took
7.1-7.7 s of CPU with them and 3.7-4.4 s without (this project's 2-core machine, alternating
runs). Each CLI run, each server and each subprocess of the test suite pays it.

`skip_keras_extras` refuses those three packages *to Keras' own modules only*: Keras catches
the ImportError and runs without the integration, as it would where they are not installed.
Any other importer gets the real package (KerasTuner's Bayesian oracle imports scikit-learn,
``scripts/report.py`` matplotlib). The cost: in that process ``keras.wrappers`` and
``plot_image_gallery`` say their package is missing. That is why the mains call it (they own
their process) and ``import wdl_tf`` does not (a user's notebook may want those integrations).

Must run before anything imports TensorFlow or Keras; it imports neither.
"""

from __future__ import annotations

import importlib.abc
import sys

# Top-level packages Keras imports eagerly, only for integrations wdl_tf does not use.
KERAS_EXTRAS = ("sklearn", "matplotlib", "IPython")


def _importer_name() -> str:
    """``__name__`` of the module whose code runs the import under way (the first frame
    outside importlib's machinery)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


class _SkipKerasExtras(importlib.abc.MetaPathFinder):
    """Finds nothing itself; raises ModuleNotFoundError for a `KERAS_EXTRAS` package
    imported by a Keras module, so that Keras takes its not-installed branch."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in KERAS_EXTRAS:
            return None
        importer = _importer_name()
        if importer == "keras" or importer.startswith("keras."):
            raise ModuleNotFoundError(
                f"{fullname} is not imported for {importer} (wdl_tf.startup.skip_keras_extras)",
                name=fullname,
            )
        return None


def skip_keras_extras() -> None:
    """Installs the finder at the front of ``sys.meta_path`` (once per process)."""
    if not any(isinstance(f, _SkipKerasExtras) for f in sys.meta_path):
        sys.meta_path.insert(0, _SkipKerasExtras())
