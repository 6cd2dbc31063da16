"""The Slicer Extensions Index's rules (Slicer/ExtensionsIndex scripts/check_description_files.py and its
size limit), checked here in our own code so that the extension stays listable."""

import re
import subprocess
from urllib.parse import urlparse

from conftest import REPO_ROOT

INDEX_SIZE_LIMIT = 100 * 1000 * 1000  # bytes: the checked-out repository, history included
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


def test_a_clone_with_its_history_stays_under_the_index_size_limit():
    """What `git clone` of main brings: one pack of every object reachable from HEAD, plus the checkout.
    The pack is built afresh, so the figure does not depend on how this clone happens to store its
    objects (loose, or the same objects in two packs, as on the CI host)."""
    objects = git("rev-list", "--objects", "HEAD")
    pack = subprocess.run(
        ["git", "pack-objects", "--stdout", "-q"],
        input=objects.encode(),
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    checkout = sum(
        (REPO_ROOT / name).stat().st_size for name in git("ls-files").splitlines() if (REPO_ROOT / name).is_file()
    )
    assert len(pack) + checkout < INDEX_SIZE_LIMIT, f"{(len(pack) + checkout) / 1e6:.1f} MB"


def test_weights_ship_once_as_onnx_models():
    """The size budget (weights/README.md): the fp32 ONNX model is the one copy of the weights (the PyTorch
    model is rebuilt from it), beside its INT8 model; no .pt is committed."""
    shipped = sorted(git("ls-files", "weights").split())
    assert shipped == ["weights/README.md", "weights/rfbsnet_fetal_brain.int8.onnx", "weights/rfbsnet_fetal_brain.onnx"]


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
