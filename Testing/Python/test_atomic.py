"""Every file the project writes is written whole or not at all (atomic.py)."""

import os
import stat

import pytest

from FetalBrainSegLib.atomic import atomic_path


def test_a_finished_write_replaces_the_file_with_a_plain_files_mode(tmp_path):
    target = tmp_path / "mask.nii.gz"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["mask.nii.gz"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    target = tmp_path / "mask.nii.gz"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["mask.nii.gz"]
