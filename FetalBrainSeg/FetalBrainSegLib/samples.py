"""The demo: fetch the public CC0 sample stack (pinned commit, SHA-256 checked) into a user cache."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from .atomic import atomic_path
from .checksums import sha256
from .user_folders import cache_folder

SAMPLE_NAME = "f0832s1_fetus_03.nii.gz"
SAMPLE_URL = (
    "https://raw.githubusercontent.com/IntelligentImaging/fetal-brain-extraction/"
    "ae618efeb93a9da8b1ac988fccf783fabc8a6ede/dataset/f0832s1/fetus_03.nii.gz"
)
SAMPLE_SHA256 = "a807027f2e84d3deb732711ccf94b1f08db752056caef01fd69be4fd9a3e708c"


class DownloadError(RuntimeError):
    pass


def cache_dir() -> Path:
    return cache_folder()


def local_copies() -> list[Path]:
    """Where the project's shared data keeps the same file: beside the repository, or beside the working folder."""
    relative = Path("shared") / "data" / "samples" / SAMPLE_NAME
    return [Path(__file__).resolve().parents[3] / relative, Path.cwd().parent / relative]


def fetch_sample(url: str | None = None, expected_sha256: str = SAMPLE_SHA256, timeout: float = 30.0) -> Path:
    """The sample: the cached or shared-data copy when its checksum matches, else downloaded from `url`
    (default: the pinned public one); a bad checksum is never kept. An explicit `url` skips the local copies."""
    target = cache_dir() / SAMPLE_NAME
    candidates = [target] if url else [target, *local_copies()]
    for candidate in candidates:
        if candidate.is_file() and sha256(candidate) == expected_sha256:
            return candidate
    url = url or SAMPLE_URL
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as partial:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as handle:
                while block := response.read(1 << 20):
                    handle.write(block)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"could not download the sample stack ({reason}); with no network, run: fetalbrainseg demo "
                f"--input YOUR_STACK.nii.gz (the project's shared data has the sample: {local_copies()[0]})"
            ) from exc
        actual = sha256(partial)
        if actual != expected_sha256:
            raise DownloadError(
                f"the downloaded sample has SHA-256 {actual[:16]}..., not the published "
                f"{expected_sha256[:16]}...; nothing was kept"
            )
    return target
