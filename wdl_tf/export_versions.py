"""The export base: the directory TF Serving watches, without TensorFlow.

Its integer subdirectories are the published versions (what TF Serving loads); ``temp-*``
directories are exports in progress, which TF Serving skips (docs/export_contract.md).
`check_export_base` lets ``train.py`` refuse an export base where nothing can be written
before TensorFlow loads and before any training; `wdl_tf.export_lib` writes, verifies and
publishes the versions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from typing import Any


def versions(export_base: str) -> list[int]:
    """Integer version directories under ``export_base`` (what TF Serving would load)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(
        int(n)
        for n in os.listdir(export_base)
        if n.isdigit() and os.path.isdir(os.path.join(export_base, n))
    )


def published_metrics(export_base: str) -> dict[str, Any] | None:
    """The eval metrics stored with the latest published version, if any."""
    latest = versions(export_base)
    if not latest:
        return None
    path = os.path.join(export_base, str(latest[-1]), "assets.extra", "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def temp_dir(export_base: str, what: str) -> str:
    """A ``temp-<what>-<pid>@<host>`` path under ``export_base`` that this process owns.

    TF Serving skips names that are not integers; the pid and host say whose it is, so a
    later publish can tell a killed export's leftovers from a running export's work.
    """
    return os.path.join(export_base, f"temp-{what}-{os.getpid()}@{socket.gethostname()}")


_TEMP_OWNER = re.compile(r"^temp-.+-(\d+)@(.+)$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_temps(export_base: str) -> list[str]:
    """Removes ``temp-*`` directories whose owning process is gone; returns their names.

    Only names made by `temp_dir` on this host are judged (a pid means nothing on another
    machine sharing the directory); a live pid, or a name of any other form, is kept.
    """
    if not os.path.isdir(export_base):
        return []
    host = socket.gethostname()
    removed = []
    for name in sorted(os.listdir(export_base)):
        match = _TEMP_OWNER.match(name)
        if not match or match.group(2) != host or _process_alive(int(match.group(1))):
            continue
        path = os.path.join(export_base, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def check_export_base(export_base: str) -> None:
    """Fails at once (before any training) when versions cannot be written to ``export_base``.

    An existing directory is probed by creating and removing a ``temp-probe-*`` directory in
    it; a missing one must be creatable: its nearest existing ancestor a writable directory.
    Nothing is left behind.

    Raises:
      ValueError: naming the path and the reason (a file in the way, no permission, ...).
    """
    allowed = "it must be a writable directory, or one that can be created"
    existing = os.path.abspath(export_base)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"export_base {export_base!r}: {existing!r} is not a directory; {allowed}")
    if existing != os.path.abspath(export_base):
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(
                f"export_base {export_base!r}: no permission to create directories in "
                f"{existing!r}; {allowed}"
            )
        return
    probe = temp_dir(export_base, "probe")
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        raise ValueError(
            f"export_base {export_base!r}: cannot write there ({e.strerror or e}); {allowed}"
        ) from None
