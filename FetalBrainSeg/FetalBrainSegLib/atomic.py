"""Writing files whole or not at all: every file the project writes goes through `atomic_path`."""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PART_SUFFIX = ".part"


def remove_unfinished(path: str | os.PathLike) -> None:
    """Remove what a killed process left of writing `path` (its atomic_path temporaries); `path` itself stays."""
    path = Path(path)
    for part in path.parent.glob(f".{glob.escape(path.name)}.*{PART_SUFFIX}"):
        part.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in `path`'s folder to write to; it replaces `path` when the block ends without
    error and is removed otherwise, so an interrupted or failed write never leaves half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the mode a plain open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
