"""The Slicer Extensions Index's rules (Slicer/ExtensionsIndex scripts/check_description_files.py and its
size limit), checked here in our own code so that the extension stays listable."""

import re
import subprocess
from urllib.parse import urlparse

from conftest import REPO_ROOT

# scripts/check_description_files.py, check_repository_size: the sizes of every file of a clone with its
# history, .git included, summed, divided by 1024², must not pass 100: 100 MiB
INDEX_SIZE_LIMIT_MIB = 100
WEIGHTS_UPDATE_MIB = 4.2  # what a whole-network weights update adds: the fp16 ONNX model (weights/README.md)
RAW_PREFIX = "https://raw.githubusercontent.com/FetalBrainSeg/FetalBrainSeg/main/"


def cmake_value(name: str) -> str:
    return re.search(rf'set\({name} "([^"]*)"\)', (REPO_ROOT / "CMakeLists.txt").read_text()).group(1)


def s4ext() -> dict[str, str]:
    lines = (REPO_ROOT / "FetalBrainSeg.s4ext").read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines if line.strip() and not line.startswith("#"))


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout


def test_a_licence_file_in_the_root_says_what_pyproject_declares():
    licence = (REPO_ROOT / "LICENSE").read_text()
    assert licence.startswith("Apache License") and "Version 2.0, January 2004" in licence
    assert 'license = { text = "Apache-2.0" }' in (REPO_ROOT / "pyproject.toml").read_text()
    assert "LICENSE" in git("ls-files", "LICENSE")


def clone_size_mib(tmp_path) -> float:
    """The Extensions Index's measure: a clone of main with its history (over git's transport, as from GitHub,
    so its objects come packed afresh), every file summed, .git included, in MiB."""
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-local", "--single-branch", str(REPO_ROOT), str(clone)],
        check=True,
        capture_output=True,
    )
    return sum(f.stat().st_size for f in clone.rglob("*") if f.is_file() and not f.is_symlink()) / 1024**2


def test_a_clone_with_its_history_leaves_room_for_a_weights_update(tmp_path, report_line):
    """By the Extensions Index's own rule; the room left is reported in whole-network weights updates."""
    size = clone_size_mib(tmp_path)
    updates = int((INDEX_SIZE_LIMIT_MIB - size) // WEIGHTS_UPDATE_MIB)
    report_line(
        f"Extensions Index size: {size:.1f} of {INDEX_SIZE_LIMIT_MIB} MiB, room for {max(updates, 0)} weights "
        f"update(s) of {WEIGHTS_UPDATE_MIB} MiB"
    )
    assert size <= INDEX_SIZE_LIMIT_MIB, f"a clone measures {size:.1f} MiB: the Extensions Index refuses it"
    assert updates >= 1, (
        f"a clone measures {size:.1f} MiB: the next weights update ({WEIGHTS_UPDATE_MIB} MiB) would not fit under "
        f"the Extensions Index's {INDEX_SIZE_LIMIT_MIB} MiB; see weights/README.md for the maintainers' history rewrite"
    )


def test_weights_ship_once_as_onnx_models_and_derived_models_not_at_all():
    """The size budget (weights/README.md): the fp32 ONNX model is the one copy of the weights (the PyTorch
    model is rebuilt from it), beside the INT8 calibration; no .pt and no INT8 model (built on first use) is
    committed."""
    shipped = sorted(git("ls-files", "weights").split())
    assert shipped == [
        "weights/README.md",
        "weights/rfbsnet_fetal_brain.int8-calibration.json",
        "weights/rfbsnet_fetal_brain.onnx",
    ]
    assert not [name for name in git("ls-files").splitlines() if name.endswith((".int8.onnx", ".pt"))]


def test_names_categories_and_urls_agree_across_cmake_s4ext_and_the_index_entry():
    import json

    entry = json.loads((REPO_ROOT / "FetalBrainSeg.json").read_text())
    description = s4ext()
    assert re.search(r"^project\(FetalBrainSeg\)$", (REPO_ROOT / "CMakeLists.txt").read_text(), re.M)
    assert (REPO_ROOT / "FetalBrainSeg.json").stem == (REPO_ROOT / "FetalBrainSeg.s4ext").stem == "FetalBrainSeg"
    assert cmake_value("EXTENSION_CATEGORY") == description["category"] == entry["category"]
    assert cmake_value("EXTENSION_HOMEPAGE") == description["homepage"]
    assert cmake_value("EXTENSION_DESCRIPTION") == description["description"]
    assert cmake_value("EXTENSION_CONTRIBUTORS") == description["contributors"]
    assert cmake_value("EXTENSION_ICONURL") == description["iconurl"]
    assert cmake_value("EXTENSION_SCREENSHOTURLS") == description["screenshoturls"]
    assert entry["scm_url"] == description["scmurl"] and entry["scm_url"].endswith("/FetalBrainSeg.git")
    assert description["homepage"].startswith(entry["scm_url"].removesuffix(".git"))


def test_icon_and_screenshot_urls_name_files_in_this_repository():
    urls = [cmake_value("EXTENSION_ICONURL"), *cmake_value("EXTENSION_SCREENSHOTURLS").split()]
    tracked = set(git("ls-files").splitlines())
    for url in urls:
        assert url.startswith(RAW_PREFIX) and urlparse(url).scheme == "https", url
        path = url.removeprefix(RAW_PREFIX)
        assert path in tracked, f"{url} names {path}, which is not in the repository"
        assert path.endswith(".png")


def test_the_description_reads_well_in_the_extensions_manager():
    """One plain sentence a user browsing the manager understands, with the contributors named as the index
    asks (Name (Organization))."""
    text = cmake_value("EXTENSION_DESCRIPTION")
    assert 40 <= len(text) <= 250 and text.endswith(".") and text[0].isupper()
    assert "fetal" in text.lower() and "brain" in text.lower() and "MRI" in text
    assert re.fullmatch(r"[^(),]+ \([^()]+\)(, [^(),]+ \([^()]+\))*", cmake_value("EXTENSION_CONTRIBUTORS"))
