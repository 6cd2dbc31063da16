"""The user's own folders (platformdirs): what the product builds and learns on their machine lives there,
never in the repository or the installed extension, which may be read-only and are replaced on update.

- cache: what can be fetched or rebuilt when missing (the INT8 model, the demo's sample stack);
- data: what the user's work made and cannot be rebuilt (site weights adapted from their corrections).

FETALBRAINSEG_CACHE and FETALBRAINSEG_DATA_DIR move them (a shared cluster disk, or tests).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FETALBRAINSEG_CACHE"
DATA_ENV = "FETALBRAINSEG_DATA_DIR"


def cache_folder() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("fetalbrainseg", appauthor=False))


def data_folder() -> Path:
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    import platformdirs

    return Path(platformdirs.user_data_dir("fetalbrainseg", appauthor=False))
