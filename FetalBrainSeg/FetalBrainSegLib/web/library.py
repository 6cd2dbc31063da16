"""Which files the web app may read and where it may write: stacks named on the command line
or lying in the folders it was started on, and outputs inside one output folder. A browser
names a stack or an output sub-folder; anything that resolves elsewhere is refused."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..engine.outputs import collect_inputs
from ..engine.stack import check_stack
from ..engine.volume_io import VolumeError, read_volume, volume_suffix


class PathRefused(ValueError):
    """A request for a file outside what the server was allowed to touch."""


class StackLibrary:
    def __init__(self, sources: list[Path], out_dir: Path, max_upload_mb: float = 500):
        """`sources`: stack files and folders of stacks."""
        self._stacks: dict[str, Path] = {}
        for path in collect_inputs(sources):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such stack")
            if path.name in self._stacks:
                raise ValueError(f"two stacks are named {path.name}; serve them separately")
            self._stacks[path.name] = path.resolve()
        self.out_dir = out_dir.resolve()
        self.max_upload_bytes = int(max_upload_mb * 1e6)
        self._uploads: tempfile.TemporaryDirectory | None = None

    @property
    def names(self) -> list[str]:
        return sorted(self._stacks)

    def stack(self, name: str) -> Path:
        """The stack a browser asked for by name; only those listed exist for it."""
        try:
            return self._stacks[name]
        except KeyError:
            raise PathRefused(f"{name!r} is not one of the stacks this server offers") from None

    def output_folder(self, sub_folder: str) -> Path:
        """A folder inside the output folder; `..`, absolute paths and links out are refused."""
        folder = (self.out_dir / sub_folder).resolve()
        if not folder.is_relative_to(self.out_dir):
            raise PathRefused(f"{sub_folder!r} lies outside the output folder {self.out_dir}")
        return folder

    def add_upload(self, file_name: str, content: bytes) -> str:
        """Offer a stack sent from the browser, once it reads as a usable stack; its name."""
        name = Path(file_name).name  # a name only: no folders from the client
        if volume_suffix(name) is None:
            raise VolumeError(f"{name}: not a NIfTI (.nii, .nii.gz) or NRRD (.nrrd) file")
        if len(content) > self.max_upload_bytes:
            raise VolumeError(
                f"{name}: {len(content) / 1e6:.0f} MB is more than the "
                f"{self.max_upload_bytes / 1e6:.0f} MB this server accepts"
            )
        if name in self._stacks:
            raise VolumeError(f"{name}: a stack of that name is already offered; rename the file")
        if self._uploads is None:
            self._uploads = tempfile.TemporaryDirectory(prefix="fetalbrainseg-uploads-")
        path = Path(self._uploads.name) / name
        path.write_bytes(content)
        try:
            check_stack(read_volume(path), name)
        except VolumeError as exc:
            path.unlink()  # the reason without the server's own folders, which the browser's user has no use for
            raise VolumeError(str(exc).replace(str(path), name)) from None
        self._stacks[name] = path
        return name
