"""Which files the web app may read and where it may write: stacks named on the command line
or lying in the folders it was started on, and outputs inside one output folder. A browser
names a stack or an output sub-folder; anything that resolves elsewhere is refused."""

from __future__ import annotations

from pathlib import Path

from .outputs import collect_inputs


class PathRefused(ValueError):
    """A request for a file outside what the server was allowed to touch."""


class StackLibrary:
    def __init__(self, sources: list[Path], out_dir: Path):
        """`sources`: stack files and folders of stacks."""
        self._stacks: dict[str, Path] = {}
        for path in collect_inputs(sources):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such stack")
            if path.name in self._stacks:
                raise ValueError(f"two stacks are named {path.name}; serve them separately")
            self._stacks[path.name] = path.resolve()
        self.out_dir = out_dir.resolve()

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
