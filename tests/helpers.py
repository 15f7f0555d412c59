"""What several test modules share: the repository root and running a script as a user does.

Imported as a plain module (``from helpers import ROOT, run_script``): under pytest's default
``prepend`` import mode, ``tests/`` is on ``sys.path`` for ``tests/*.py`` (no ``__init__.py``)
and for the ``tests/serving`` package alike, in every xdist worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name: str) -> str:
    """The path of ``scripts/<name>.py``."""
    return os.path.join(ROOT, "scripts", f"{name}.py")


def script_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) for a script: this checkout's packages
    first on ``PYTHONPATH`` (``sys.path[0]`` of a script is ``scripts/``, not the root, so an
    installed ``wdl_tf`` would otherwise win) and TensorFlow's C++ logging quiet unless set."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, out.get("PYTHONPATH")) if p)
    out.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return out


def run_script(
    name: str,
    *flags: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    cwd: str = ROOT,
) -> subprocess.CompletedProcess:
    """Runs ``scripts/<name>.py *flags`` with this interpreter and returns the finished process
    (``stdout`` and ``stderr`` captured as text; the return code is not checked)."""
    return subprocess.run(
        [sys.executable, script(name), *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=script_env(env),
        cwd=cwd,
    )
