"""Atomic file writes: the one helper behind every file a server or a later run may read;
and the one exclusive file lock, for work two processes must not do at once.

A file is written under a temporary name in the same directory (hidden, so globs for the
real name do not match it), flushed, and renamed onto its name with ``os.replace``, which
is atomic on POSIX within a file system: a reader sees the old file or the whole new one,
never half of it. On any error the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside ``path``; renamed onto ``path`` when the block ends.

    For writers that take a path (``np.savez``, ``gzip.open``, ``tf.io.TFRecordWriter``):
    the temporary name ends with ``path``'s base name, so extensions such as ``.npz`` are
    kept. The parent directory is created. The caller's writer must be closed inside the
    block.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(
        directory, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{os.path.basename(path)}"
    )
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes, mode: int = 0o644) -> str:
    """Writes ``data`` to ``path`` atomically (flushed to disk first); returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
    return path


def write_text(path: str, text: str, mode: int = 0o644) -> str:
    """Writes ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"), mode)


def write_json(
    path: str, obj: Any, indent: int | None = 2, default: Callable[[Any], Any] | None = None
) -> str:
    """Writes ``obj`` as JSON (with a final newline) to ``path`` atomically; returns ``path``."""
    return write_text(path, json.dumps(obj, indent=indent, default=default) + "\n")


@contextlib.contextmanager
def exclusive_lock(path: str) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) on ``path``, created if needed, for the block:
    a second process entering the block waits until the first has left it."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
