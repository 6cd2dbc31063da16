"""The Slicer extension's packaging: CMake lists every module file, the .ui has every widget
the panel uses, the metadata agrees, and the module finds its resources in both layouts."""

import ast
import json
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import REPO_ROOT, module_closure

MODULE_DIR = REPO_ROOT / "FetalBrainSeg"
UI_FILE = REPO_ROOT / "Resources" / "UI" / "FetalBrainSeg.ui"


def cmake_list(name: str) -> list[str]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    body = re.search(rf"set\({name}\n(.*?)\n\s*\)", text, re.S).group(1)
    return [line.strip().replace("${MODULE_NAME}", "FetalBrainSeg") for line in body.splitlines() if line.strip()]


def test_cmake_installs_exactly_the_module_and_what_it_imports():
    """Slicer users get the module's closure: site adaptation's training code (Improve from my corrections) but
    no other, no web app, no CLI, and of the networks only RFBSNet (the paper's comparison is an experiment)."""
    needed = {"FetalBrainSeg.py"} | {
        str(p.relative_to(MODULE_DIR)) for p in module_closure(MODULE_DIR / "FetalBrainSeg.py")
    }
    listed = cmake_list("MODULE_PYTHON_SCRIPTS")
    assert sorted(listed) == sorted(needed)
    assert not [f for f in listed if f.split("/")[1:2] in (["web"], ["cli"])]
    assert [f for f in listed if f.startswith("FetalBrainSegLib/models/") and "net" in f] == [
        "FetalBrainSegLib/models/rfbsnet.py"
    ]
    assert "FetalBrainSegLib/training/adapt.py" in listed and "FetalBrainSegLib/training/quantization.py" not in listed


def test_resources_and_weights_listed_in_cmake_exist():
    resources = cmake_list("MODULE_RESOURCE_FILES")
    assert "UI/FetalBrainSeg.ui" in resources and "Icons/FetalBrainSeg.png" in resources
    for resource in resources:
        assert (REPO_ROOT / "Resources" / resource).is_file(), resource
    from FetalBrainSegLib.resources import DEFAULT_WEIGHTS_NAME

    listed = cmake_list("MODULE_WEIGHT_FILES")
    assert listed == [
        DEFAULT_WEIGHTS_NAME.replace(".pt", ".onnx"),
        DEFAULT_WEIGHTS_NAME.replace(".pt", ".int8-calibration.json"),
    ]
    for name in listed:
        assert (REPO_ROOT / "weights" / name).is_file(), name


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).iter("widget")}


def test_every_widget_the_panel_uses_exists_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE_DIR / "FetalBrainSegLib" / "slicer" / "widget.py").read_text()))
    assert used and not used - set(ui_widgets()), used - set(ui_widgets())


def test_ui_parameters_are_the_parameter_nodes_fields():
    bound = {
        prop.find("string").text
        for w in ui_widgets().values()
        for prop in w.findall("property")
        if prop.get("name") == "SlicerParameterName"
    }
    tree = ast.parse((MODULE_DIR / "FetalBrainSeg.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FetalBrainSegParameterNode")
    fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    assert bound == fields == {"inputVolume", "outputSegmentation", "device", "precision", "threshold", "marginMm"}


def test_the_module_shell_has_module_widget_logic_and_test_classes():
    tree = ast.parse((MODULE_DIR / "FetalBrainSeg.py").read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"FetalBrainSeg", "FetalBrainSegWidget", "FetalBrainSegLogic", "FetalBrainSegTest"} <= classes


def test_icon_is_a_128_pixel_png():
    png = (REPO_ROOT / "Resources" / "Icons" / "FetalBrainSeg.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (128, 128)


def test_extension_metadata_agrees():
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert "find_package(Slicer REQUIRED)" in cmake and "add_subdirectory(FetalBrainSeg)" in cmake
    assert "Slicer_EXTENSION_CPACK" in cmake and "Slicer_EXTENSION_GENERATE_CONFIG" in cmake
    category = re.search(r'set\(EXTENSION_CATEGORY "([^"]+)"\)', cmake).group(1)
    s4ext = dict(
        line.split(" ", 1)
        for line in (REPO_ROOT / "FetalBrainSeg.s4ext").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    entry = json.loads((REPO_ROOT / "FetalBrainSeg.json").read_text())
    allowed = {
        "$schema",
        "build_dependencies",
        "build_subdirectory",
        "category",
        "enabled",
        "scm_revision",
        "scm_type",
        "scm_url",
        "tier",
    }  # the catalog schema forbids any other key
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["category"] == s4ext["category"] == category
    assert entry["scm_url"] == s4ext["scmurl"]
    assert 'self.parent.categories = ["Segmentation"]' in (MODULE_DIR / "FetalBrainSeg.py").read_text()


def test_resources_and_weights_are_found_in_the_installed_layout_too(tmp_path):
    """lib/Slicer-X/qt-scripted-modules/{FetalBrainSeg.py, FetalBrainSegLib/, Resources/{UI,Icons,weights}}."""
    installed = tmp_path / "qt-scripted-modules"
    shutil.copytree(
        MODULE_DIR / "FetalBrainSegLib", installed / "FetalBrainSegLib", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO_ROOT / "Resources", installed / "Resources")
    shutil.copytree(REPO_ROOT / "weights", installed / "Resources" / "weights")
    probe = (
        "from FetalBrainSegLib.resources import default_weights_path, resource_path; "
        "print(resource_path('UI/FetalBrainSeg.ui')); print(default_weights_path())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=installed,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    ui, weights = done.stdout.split()
    assert ui == str(installed / "Resources" / "UI" / "FetalBrainSeg.ui")
    assert weights == str(installed / "Resources" / "weights" / "rfbsnet_fetal_brain.pt")

    from FetalBrainSegLib.resources import resource_path  # and from this source checkout

    assert resource_path("UI/FetalBrainSeg.ui") == UI_FILE
