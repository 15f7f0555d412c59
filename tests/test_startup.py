"""Tests for `wdl_tf.startup`: the mains start TensorFlow without Keras' optional extras."""

from __future__ import annotations

import ast
import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import ROOT, script_env

EXTRAS = ("sklearn", "matplotlib", "IPython")


def _fresh(code: str) -> dict:
    """Runs ``code`` in a new interpreter; it prints one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=script_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_keras_loads_without_its_extras_and_others_still_import_them() -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = _fresh(
        """
        import json, sys
        from wdl_tf import startup
        startup.skip_keras_extras()
        startup.skip_keras_extras()  # twice: still one finder
        import tensorflow as tf
        import keras
        from keras.src.wrappers import fixes
        loaded = [m for m in ("sklearn", "matplotlib", "IPython") if m in sys.modules]
        finders = sum(type(f).__name__ == "_SkipKerasExtras" for f in sys.meta_path)
        # Not Keras: the real packages (KerasTuner's Bayesian oracle, scripts/report.py).
        import sklearn.gaussian_process
        import matplotlib.pyplot as plt
        print(json.dumps({
            "loaded_with_keras": loaded,
            "keras_sees_sklearn": fixes.sklearn is not None,
            "finders": finders,
            "sklearn_after": sklearn.__version__,
            "figure": type(plt.figure()).__name__,
        }))
        """
    )
    assert out["loaded_with_keras"] == []
    # sklearn is installed: without the finder Keras would have imported it.
    assert out["keras_sees_sklearn"] is False
    assert out["finders"] == 1
    assert out["sklearn_after"]
    assert out["figure"] == "Figure"


# Mains that install it in their ``__main__`` block, below imports of wdl_tf modules: those
# modules must not load TensorFlow when imported (checked in a fresh interpreter below).
LATE_MAINS = ("wdl_tf.benchmarks.train_e2e", "wdl_tf.benchmarks.train_files")


def _mains() -> list[str]:
    """Every file a user or the package runs as a main process."""
    paths = sorted(glob.glob(os.path.join(ROOT, "scripts", "*.py")))
    modules = ("tf_serving.server.__main__", "wdl_tf.verify_export", *LATE_MAINS)
    return paths + [os.path.join(ROOT, *m.split(".")) + ".py" for m in modules]


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [f"{node.module}.{a.name}" for a in node.names]
    return []


@pytest.mark.parametrize("path", _mains(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_main_installs_it_before_anything_loads_tensorflow(path: str) -> None:
    """The call comes before every top-level import that could load TensorFlow: above it
    only the standard library, absl, numpy and `wdl_tf.startup` (and, in `LATE_MAINS`,
    wdl_tf modules that leave TensorFlow unloaded)."""
    tree = ast.parse(open(path).read())
    calls = [
        n.lineno
        for n in tree.body
        if any(
            isinstance(c, ast.Call) and getattr(c.func, "attr", "") == "skip_keras_extras"
            for c in ast.walk(n)
        )
    ]
    assert calls, f"{path} never calls startup.skip_keras_extras()"
    module = os.path.relpath(path, ROOT).removesuffix(".py").replace(os.sep, ".")
    allowed = set(sys.stdlib_module_names) | {"__future__", "absl", "numpy"}
    for node in tree.body:
        for name in _imported(node) if node.lineno < calls[0] else []:
            ok = name.split(".")[0] in allowed or name == "wdl_tf.startup"
            ok |= module in LATE_MAINS and name.startswith("wdl_tf.")
            assert ok, f"{path}:{node.lineno} imports {name} before startup.skip_keras_extras()"


def test_late_mains_import_without_tensorflow() -> None:
    out = _fresh(
        f"""
        import json, sys
        for m in {LATE_MAINS!r}:
            __import__(m)
        print(json.dumps("tensorflow" in sys.modules))
        """
    )
    assert out is False
