"""Atomic file writes: the one temporary-then-rename helper of the package."""
from __future__ import annotations

import contextlib
import os
import pathlib

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` to write to; on success it is renamed onto
    `path` (atomic on one file system), on failure removed. Run files, figures, GIFs and
    the decoded-video cache are written through this, so a kill leaves the old file or
    the new one, never half of one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
