"""First-use installation of what Slicer does not bundle: asked, never forced, never a crash."""

import subprocess
import sys

from conftest import REPO_ROOT

from FetalBrainSegLib.slicer.dependencies import (
    BUNDLED_WITH_SLICER,
    GPU_RUNTIME,
    LIGHT_RUNTIME,
    READERS,
    ensure_dependencies,
)


class Fakes:
    def __init__(self, installed=(), answer=True, fail=False, readers=True):
        self.installed = set(installed) | (set(READERS) if readers else set())
        self.answer, self.fail = answer, fail
        self.asked, self.pip, self.torch_utils, self.reports = [], [], [], []

    def find_spec(self, name):
        return object() if name in self.installed else None

    def confirm(self, question):
        self.asked.append(question)
        return self.answer

    def pip_install(self, requirement):
        if self.fail:
            raise RuntimeError("no network")
        self.pip.append(requirement)
        name = requirement.split(">")[0].split("=")[0].split("<")[0]
        self.installed.add("nrrd" if name == "pynrrd" else name)

    def installTorch(self, askConfirmation):  # noqa: N802 (PyTorchUtilsLogic's name)
        self.torch_utils.append(askConfirmation)
        self.installed.add("torch")
        return "torch module"

    def run(self, torch_utils=False, gpu=False, precision="fp32", training=False):
        return ensure_dependencies(
            self.confirm,
            self.pip_install,
            self if torch_utils else None,
            self.reports.append,
            self.find_spec,
            gpu,
            precision,
            training,
        )


def test_slicers_own_packages_are_never_installed():
    assert not {LIGHT_RUNTIME, GPU_RUNTIME} & set(BUNDLED_WITH_SLICER)


def test_nothing_is_asked_when_a_runtime_is_there():
    for present in ("onnxruntime", "torch"):
        fakes = Fakes(installed={present})
        assert fakes.run() and not fakes.asked and not fakes.pip


def test_the_light_runtime_is_offered_by_default():
    fakes = Fakes()
    assert fakes.run(torch_utils=True)
    assert fakes.pip == ["onnxruntime>=1.28,<2"] and not fakes.torch_utils and "80 megabytes" in fakes.asked[0]


def test_declining_installs_nothing_and_says_what_is_missing():
    fakes = Fakes(answer=False)
    assert not fakes.run()
    assert "onnxruntime" in fakes.asked[0] and not fakes.pip
    assert "cannot segment" in fakes.reports[0]


def test_the_gpu_needs_pytorch_through_the_pytorch_extension_without_a_second_prompt():
    fakes = Fakes(installed={"onnxruntime"})
    assert fakes.run(torch_utils=True, gpu=True)
    assert fakes.torch_utils == [False] and not fakes.pip and len(fakes.asked) == 1


def test_pytorch_comes_from_pip_when_there_is_no_pytorch_extension():
    fakes = Fakes()
    assert fakes.run(gpu=True) and fakes.pip == ["torch>=2.0,<3"]


def test_a_failed_install_is_a_message_not_a_crash():
    fakes = Fakes(fail=True)
    assert not fakes.run()
    assert "failed: no network" in fakes.reports[0]


def test_the_engine_imports_no_slicer_qt_or_ctk_and_the_glue_loads_without_torch():
    package = REPO_ROOT / "FetalBrainSeg" / "FetalBrainSegLib"
    engine = [
        ".".join(p.relative_to(package).with_suffix("").parts)
        for p in package.rglob("*.py")
        if p.relative_to(package).parts[0] not in ("slicer", "web", "__main__.py", "__pycache__")
    ]
    engine = [name.removesuffix(".__init__") for name in engine if name != "__init__"]
    probe = (
        f"import sys, importlib\nfor m in {engine!r}: importlib.import_module('FetalBrainSegLib.' + m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('slicer', 'qt', 'ctk')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

    # Slicer must load the module (to offer the PyTorch install) on a Slicer without PyTorch
    probe = (
        "import sys; import FetalBrainSegLib.slicer.logic, FetalBrainSegLib.slicer.dependencies; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_int8_with_only_pytorch_installed_offers_onnx_runtime_instead_of_crashing():
    """The INT8 model never runs in PyTorch: a Slicer with PyTorch alone must be offered ONNX Runtime, and what
    builds the INT8 model from the shipped calibration on first use (onnx, platformdirs)."""
    fakes = Fakes(installed={"torch"})
    assert fakes.run(precision="fp32") and not fakes.asked  # fp32 runs in PyTorch
    builder = ["onnx>=1.15,<2", "platformdirs>=3,<5"]
    assert fakes.run(precision="int8") and fakes.pip == ["onnxruntime>=1.28,<2", *builder]
    assert "onnxruntime" in fakes.asked[0]
    openvino = Fakes(installed={"torch", "openvino"})  # OpenVINO serves INT8 too
    assert openvino.run(precision="int8") and openvino.pip == builder


def test_every_runtime_installed_on_first_use_has_a_version_range():
    from FetalBrainSegLib.slicer.dependencies import PIP_REQUIREMENTS

    for module, requirement in PIP_REQUIREMENTS.items():
        assert requirement.split(">")[0] in (module, "py" + module) and ">=" in requirement and "<" in requirement


def test_the_image_libraries_are_offered_with_the_runtime_when_slicer_lacks_them():
    fakes = Fakes(installed={"onnxruntime"}, readers=False)
    assert fakes.run() and fakes.pip == ["nibabel>=5.0,<6", "pynrrd>=1.0,<2"]
    assert "nibabel, pynrrd" in fakes.asked[0]


def test_the_self_test_installs_what_a_stock_slicer_lacks_without_asking(tmp_path):
    from FetalBrainSegLib.slicer.self_test import prepare_self_test

    stock = Fakes(installed=(), readers=False)  # Slicer's Python: no runtime, no nibabel, no pynrrd
    stack = tmp_path / "stack.nii.gz"
    stack.write_bytes(b"")
    assert prepare_self_test(stock.pip_install, stock.find_spec, fetch=lambda: stack) == stack
    assert sorted(stock.pip) == ["nibabel>=5.0,<6", "onnxruntime>=1.28,<2", "pynrrd>=1.0,<2"] and not stock.asked


def test_the_self_test_offline_says_plainly_what_is_missing(monkeypatch):
    import pytest

    from FetalBrainSegLib.samples import DownloadError
    from FetalBrainSegLib.slicer.self_test import STACK_ENV, SelfTestUnavailable, prepare_self_test

    offline = Fakes(installed=(), readers=False, fail=True)
    with pytest.raises(SelfTestUnavailable, match=r"needs nibabel, pynrrd, onnxruntime.*installing failed.*no network"):
        prepare_self_test(offline.pip_install, offline.find_spec)

    def no_network():
        raise DownloadError("could not download the sample stack (no network)")

    monkeypatch.delenv(STACK_ENV, raising=False)
    ready = Fakes(installed=(LIGHT_RUNTIME,))
    with pytest.raises(SelfTestUnavailable, match=rf"needs a stack.*no network.*set {STACK_ENV}"):
        prepare_self_test(ready.pip_install, ready.find_spec, fetch=no_network)
    monkeypatch.setenv(STACK_ENV, "/no/such/stack.nii.gz")
    with pytest.raises(SelfTestUnavailable, match="not a file"):
        prepare_self_test(ready.pip_install, ready.find_spec, fetch=no_network)


def test_learning_from_corrections_asks_for_pytorch_even_where_onnx_runtime_segments():
    fakes = Fakes(installed={"onnxruntime"})
    assert fakes.run(torch_utils=True, training=True)
    assert fakes.torch_utils == [False] and "learn from your corrections" in fakes.asked[0]
    declined = Fakes(installed={"onnxruntime"}, answer=False)
    assert not declined.run(training=True)
    assert "cannot learn from your corrections" in declined.reports[0]
    assert "Improve from my corrections" in declined.reports[0]
    assert Fakes(installed={"torch"}).run(training=True)
