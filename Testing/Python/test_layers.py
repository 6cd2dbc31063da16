"""The package's layers (issue 13): a layer imports only the layers below it, and only slicer/ and web/
import Slicer, Qt, CTK, VTK or trame. Every import counts, those inside functions included."""

from conftest import PACKAGE, imports_of

BASE = {
    "resources",
    "provenance",
    "progress",
    "samples",
    "atomic",
    "checksums",
    "user_folders",
    "settings",
    "__init__",
}  # serve every layer, import none
BELOW = {
    "base": set(),
    "models": {"base"},
    "engine": {"base", "models"},
    "evaluation": {"base", "models", "engine"},
    "training": {"base", "models", "engine", "evaluation"},
    # site adaptation (training/adapt.py) from the panel's "Improve from my corrections", imported when asked
    "slicer": {"base", "models", "engine", "evaluation", "training"},
    "web": {"base", "models", "engine", "slicer"},
    "scanner": {"base", "models", "engine"},
}
TOP = {"cli", "__main__"}  # the command line, over every layer
GUI = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "trame", "trame_slicer", "trame_server", "trame_vuetify"}


def layer_of(parts: tuple[str, ...]) -> str:
    """parts: the module's path inside the package, e.g. ("engine", "stack")."""
    if parts[0] in TOP:
        return "top"
    if len(parts) == 1:
        return "base" if parts[0] in BASE else "unknown"
    return parts[0]


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_known_layer():
    for path in modules():
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        assert layer_of(parts) in BELOW or parts[0] in TOP, parts


def test_lower_layers_never_import_higher_ones():
    violations = []
    for path in modules():
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        mine = layer_of(parts)
        if mine == "top":
            continue
        for kind, target in imports_of(path):
            if kind != "package" or not target:
                continue
            theirs = layer_of(target[:1] if target[0] in BASE else target)
            if theirs != mine and theirs not in BELOW[mine]:
                violations.append(f"{'/'.join(parts)} ({mine}) imports {'.'.join(target)} ({theirs})")
    assert not violations, "\n".join(violations)


def test_only_slicer_and_web_import_slicer_qt_ctk_vtk_or_trame():
    offenders = []
    for path in modules():
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if layer_of(parts) in ("slicer", "web"):
            continue
        offenders += [
            f"{'/'.join(parts)} imports {t[0]}" for kind, t in imports_of(path) if kind == "external" and t[0] in GUI
        ]
    assert not offenders, offenders


def test_the_layer_check_sees_a_violation():
    """The checker itself: an engine module importing the trainer, and one importing slicer, are caught."""
    fake = PACKAGE / "engine" / "_layer_probe.py"
    fake.write_text("def f():\n    from ..training.trainer import Trainer\n    import slicer\n")
    try:
        found = imports_of(fake)
        assert ("package", ("training", "trainer")) in found and ("external", ("slicer",)) in found
    finally:
        fake.unlink()


def test_the_package_offers_its_api_without_importing_torch_or_slicer():
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "import FetalBrainSegLib as f\n"
        "from FetalBrainSegLib import Segmenter, read_volume, write_mask\n"
        "assert callable(read_volume) and callable(write_mask) and Segmenter.__name__ == 'Segmenter'\n"
        "print(sorted(m for m in ('torch', 'slicer', 'vtk') if m in sys.modules), sorted(f.__all__))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split("] ")[0] == "["  # neither torch nor slicer nor vtk
    assert "'BrainSegmentationLogic'" in done.stdout and "'Segmenter'" in done.stdout


def test_the_experiments_stand_apart_and_run_as_modules():
    """Issue 31: the scripts added the package to sys.path by hand, imported test helpers and each other by file
    name, and reached into private code. Now `experiments/` runs as `python -m experiments.NAME` over the
    installed product: the product never imports it, it never imports the tests (they import it), nothing sets
    sys.path, and every module it names exists."""
    import ast
    import importlib.util

    from conftest import REPO_ROOT

    for path in PACKAGE.rglob("*.py"):
        assert not [t for kind, t in imports_of(path) if kind == "external" and t[0] == "experiments"], path
    experiments = sorted((REPO_ROOT / "experiments").glob("*.py"))
    assert len(experiments) > 1 and not list((REPO_ROOT / "scripts").glob("*.py"))
    for path in experiments:
        text = path.read_text()
        assert "sys.path" not in text and "noqa: E402" not in text, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                top = node.module.split(".")[0]
                assert top not in ("conftest", "Testing"), path  # test helpers the experiments need live there
                if top in ("experiments", "FetalBrainSegLib"):
                    assert importlib.util.find_spec(node.module) is not None, (path, node.module)
                    assert not [a.name for a in node.names if a.name.startswith("_")], (path, node.module)


def test_the_experiments_extra_brings_every_module_the_experiments_import():
    """`pip install -e ".[experiments]"` is enough to run them: each third-party module that experiments/
    imports comes with the product or with that extra (issue 31)."""
    import ast
    import re
    import sys
    from importlib.metadata import packages_distributions

    import tomllib
    from conftest import REPO_ROOT

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["experiments"]
    declared = {re.split(r"[<>=\[ ]", requirement)[0].lower() for requirement in requirements}
    distributions = packages_distributions()
    imported = set()
    for path in (REPO_ROOT / "experiments").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add((path.name, node.module.split(".")[0]))
    ours = {"experiments", "FetalBrainSegLib", *sys.stdlib_module_names}
    third_party = {(f, m) for f, m in imported if m not in ours}
    assert {m for _, m in third_party} >= {"torch", "matplotlib"}
    for name, module in sorted(third_party):
        assert {d.lower() for d in distributions.get(module, [module])} & declared, (name, module)
