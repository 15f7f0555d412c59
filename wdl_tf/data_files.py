"""Data file names: the error for bad input data and the expansion of file patterns.

Kept apart from `input_pipeline` (which loads TensorFlow) so that a command line naming a
file that does not exist is refused before TensorFlow is imported (`cli`), in about a
second instead of the ~7 s the import takes.
"""

from __future__ import annotations

import glob
import os


class DataError(ValueError):
    """Bad input data: a missing file or a malformed row (file, line and field named)."""


def resolve_files(patterns: str | list[str] | tuple[str, ...]) -> list[str]:
    """Expands comma-separated paths or globs; every one must match an existing file."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    if not patterns:
        raise DataError("no data files given")
    files = []
    for pattern in patterns:
        pattern = pattern.strip()
        matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        matched = [m for m in matched if os.path.isfile(m)]
        if not matched:
            raise DataError(f"data file {pattern!r} does not exist (or matches no file)")
        files.extend(matched)
    return files
