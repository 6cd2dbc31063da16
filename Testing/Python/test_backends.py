"""Inference runtimes: the shipped ONNX model agrees with the shipped weights, and segmenting
works with numpy and ONNX Runtime alone (PyTorch made unimportable)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, dice

from FetalBrainSegLib.checksums import sha256
from FetalBrainSegLib.engine.backends import (
    OnnxRuntimeBackend,
    OpenVinoBackend,
    TorchBackend,
    create_backend,
    onnx_path_for,
)
from FetalBrainSegLib.engine.int8_model import calibration_path_for, int8_model, read_calibration
from FetalBrainSegLib.engine.stack import Stack
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.metrics import pooled_dice
from FetalBrainSegLib.resources import default_weights_path
from FetalBrainSegLib.user_folders import cache_folder

# run Python as if PyTorch were not installed: `import torch` fails, find_spec("torch") is None
WITHOUT_TORCH = "import sys\nsys.modules['torch'] = None\n"


def shipped_int8():
    """The INT8 model of the shipped weights as users get it: built from the shipped calibration on first use
    (into the suite's cache folder, conftest.py)."""
    return int8_model(onnx_path_for(default_weights_path()))


def test_the_shipped_onnx_model_matches_the_shipped_weights(manifest):
    weights = default_weights_path()
    onnx_backend, torch_backend = OnnxRuntimeBackend(onnx_path_for(weights)), TorchBackend(weights, "cpu")
    assert onnx_backend.metadata["preprocessing"] == torch_backend.metadata["preprocessing"]
    assert onnx_backend.metadata["model_options"] == torch_backend.metadata["model_options"]
    for name in ("e2mip_testing_0000", "e2mip_testing_0562"):  # the smallest T2W and EPI test stacks
        images = Stack(read_volume(next(r for r in manifest if r.name == name).image)).network_input()
        a, b = torch_backend.predict(images), onnx_backend.predict(images)
        assert np.abs(a - b).max() < 1e-3
        assert np.mean((a >= 0.5) == (b >= 0.5)) > 0.9999


# this stack's second-pass zoom, where the agreement was measured: the engine's choice between its two zoom
# passes is a close call on it, which INT8's rounding may tip (test_zoom.py tests the choice)
FIXED_ZOOM = 1.25


@pytest.mark.parametrize("precision,agreement", [("fp32", 0.999), ("int8", 0.98)])
def test_segment_runs_without_pytorch(tmp_path, t2w_test_record, precision, agreement):
    probe = (
        WITHOUT_TORCH
        + f"""
from FetalBrainSegLib.cli import main
code = main(["segment", {str(t2w_test_record.image)!r}, "-o", {str(tmp_path)!r}, "--quiet",
             "--precision", {precision!r}, "--zoom", "{FIXED_ZOOM}"])
print("torch imported:", sys.modules.get("torch") is not None)
sys.exit(code)
"""
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout and f"{precision} on cpu" in done.stdout
    mask = read_volume(tmp_path / "e2mip_testing_0000_brainmask.nii.gz").data
    from FetalBrainSegLib.engine.inference import Segmenter

    reference = Segmenter(device="cpu", backend="torch", zoom=FIXED_ZOOM).segment(read_volume(t2w_test_record.image))
    assert dice(mask, reference.mask) > agreement


def test_evaluate_runs_without_pytorch_and_writes_its_summary(tmp_path, manifest_path):
    """provenance once imported torch to describe the machine: the light install died after slices.csv."""
    probe = (
        WITHOUT_TORCH
        + f"""
from FetalBrainSegLib.cli import main
sys.exit(main(["evaluate", "--manifest", {str(manifest_path)!r}, "--split", "test", "--modalities", "EPI",
               "-o", {str(tmp_path)!r}, "--backend", "onnxruntime", "--zoom", "1"]))  # zoom is not the point
"""
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert (tmp_path / "slices.csv").is_file() and "EPI test split" in summary and "no torch" in summary


def test_the_validation_stacks_of_the_shipped_weights_are_read_without_pytorch(manifest_path):
    """The measurement scripts choose on the validation stacks recorded in the weights; the ONNX model's
    metadata names the same stacks as the record PyTorch rebuilds from it."""
    from FetalBrainSegLib.models.weights import load_weights

    probe = (
        WITHOUT_TORCH
        + f"""
from FetalBrainSegLib.evaluation.dataset import held_out, read_manifest
from FetalBrainSegLib.resources import default_weights_path
names = sorted(r.name for r in held_out(read_manifest({str(manifest_path)!r}), "validation", default_weights_path()))
print(",".join(names))
print("torch imported:", sys.modules.get("torch") is not None)
"""
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names, imported = done.stdout.splitlines()
    assert names.split(",") == sorted(load_weights(default_weights_path())[1]["training"]["val_stacks"])
    assert imported == "torch imported: False"


def test_auto_picks_the_fastest_installed_cpu_runtime_and_torch_when_asked():
    assert create_backend("auto", device="cpu").name == "openvino"  # installed with the test extras
    assert create_backend("torch", device="cpu").name == "torch"
    probe = WITHOUT_TORCH + (
        "sys.modules['openvino'] = None\n"
        "from FetalBrainSegLib.engine.backends import create_backend; print(create_backend().name)"
    )
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "onnxruntime"
    # INT8 never falls back to fp32 PyTorch
    probe = (
        "import sys\nsys.modules['openvino'] = None\nsys.modules['onnxruntime'] = None\n"
        "from FetalBrainSegLib.engine.backends import create_backend; create_backend(device='cpu', precision='int8')"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (
        done.returncode != 0
        and "no inference runtime installed for this model: pip install onnxruntime\n" in done.stderr
    )


def test_the_onnx_runtimes_take_the_threads_that_omp_num_threads_gives_as_pytorch_does(monkeypatch):
    """Processes that share the cores (parallel test workers) each set their share; unset, each runtime chooses."""
    weights = onnx_path_for(default_weights_path())
    for threads in {1, min(2, os.cpu_count())}:  # OpenVINO uses no more threads than cores
        monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
        assert OnnxRuntimeBackend(weights).session.get_session_options().intra_op_num_threads == threads
        compiled = next(iter(OpenVinoBackend(weights)._requests.values())).get_compiled_model()
        assert compiled.get_property("INFERENCE_NUM_THREADS") == threads
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert OnnxRuntimeBackend(weights).session.get_session_options().intra_op_num_threads == 0  # its own choice


def test_backend_misuse_gets_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        create_backend("tensorrt")
    with pytest.raises(ValueError, match="runs with the onnxruntime or openvino backend"):
        create_backend("torch", onnx_path_for(default_weights_path()))
    for name in ("onnxruntime", "openvino"):
        with pytest.raises(ValueError, match="CPU"):
            create_backend(name, device="cuda")
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        create_backend("onnxruntime", tmp_path / "missing.pt")


def test_export_writes_the_weights_metadata_into_the_onnx_file(tmp_path):
    from FetalBrainSegLib.engine.backends import ONNX_METADATA_KEY
    from FetalBrainSegLib.models.weights import load_weights
    from FetalBrainSegLib.training.onnx_export import export_onnx

    path = export_onnx(default_weights_path(), tmp_path / "model.onnx")
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    _, expected = load_weights(default_weights_path())
    assert json.loads(meta[ONNX_METADATA_KEY])["preprocessing"] == expected["preprocessing"]
    assert (REPO_ROOT / "weights" / onnx_path_for(default_weights_path()).name).is_file()


def test_weights_load_from_the_onnx_file_named_directly_as_from_the_missing_pt_beside_it():
    """`train --init weights/rfbsnet_fetal_brain.onnx` and the API take the shipped file by its own name."""
    import torch

    from FetalBrainSegLib.models.weights import load_weights

    by_pt, meta_pt = load_weights(default_weights_path())
    by_onnx, meta_onnx = load_weights(onnx_path_for(default_weights_path()))
    assert meta_onnx["training"] == meta_pt["training"]
    for (name, a), b in zip(by_pt.state_dict().items(), by_onnx.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="INT8"):
        load_weights(shipped_int8())


def test_the_shipped_onnx_model_is_the_one_copy_of_the_weights(tmp_path):
    """No .pt ships: PyTorch rebuilds the model from the ONNX file, and that model exports to the same
    initializers, bit for bit, so nothing is lost between the two."""
    import onnx
    from onnx import numpy_helper

    from FetalBrainSegLib.models.weights import load_weights, save_weights
    from FetalBrainSegLib.training.onnx_export import export_onnx

    assert not default_weights_path().is_file() and onnx_path_for(default_weights_path()).is_file()
    model, meta = load_weights(default_weights_path())
    save_weights(
        tmp_path / "rebuilt.pt",
        model,
        meta["model"],
        meta["model_options"],
        meta["preprocessing"]["pixel_size_mm"],
        meta["training"],
    )
    shipped = onnx.load(str(onnx_path_for(default_weights_path()))).graph.initializer
    again = onnx.load(str(export_onnx(tmp_path / "rebuilt.pt"))).graph.initializer
    a, b = ({t.name: numpy_helper.to_array(t) for t in graph} for graph in (shipped, again))
    assert sorted(a) == sorted(b) and len(a) >= 100
    # an export stores the weights in half precision: the same values, rounded once where the file held fp32
    assert all(np.array_equal(a[name].astype(b[name].dtype), b[name]) for name in a)


def test_an_export_stores_the_weights_in_half_precision_and_computes_in_fp32(tmp_path, manifest):
    """Half the file, which is what a weights update costs the repository; the masks stay those of fp32."""
    import onnx

    from FetalBrainSegLib.training.onnx_export import export_onnx

    path = export_onnx(default_weights_path(), tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    weights = [t for t in graph.initializer if t.name.startswith("network.")]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert sum(n.op_type == "Cast" for n in graph.node) == len(weights)
    assert path.stat().st_size < 0.55 * sum(np.prod(t.dims) * 4 for t in weights)
    half, full = OnnxRuntimeBackend(path), TorchBackend(default_weights_path(), "cpu")
    for name in ("e2mip_testing_0000", "e2mip_testing_0562"):  # the smallest T2W and EPI test stacks
        images = Stack(read_volume(next(r for r in manifest if r.name == name).image)).network_input()
        a, b = full.predict(images), half.predict(images)
        # rounding the weights moves a probability by at most ~0.02 (docs/results/weights_in_half.md)
        assert b.dtype == np.float32 and np.abs(a - b).max() < 0.03
        assert dice(a >= 0.5, b >= 0.5) > 0.999


@pytest.fixture(scope="module")
def reference_masks(manifest_path):
    """Every test slice (T2W and EPI) with fp32 PyTorch's masks and the manual ones, as the latency
    benchmark scores precisions."""
    from FetalBrainSegLib.evaluation.latency import ReferenceMasks

    return ReferenceMasks(manifest_path)


def test_every_default_runtime_keeps_masks_within_dice_0999_of_fp32_pytorch(reference_masks):
    """What auto runs by default on a CPU (OpenVINO fp32, or ONNX Runtime) is held to Dice >= 0.999
    against fp32 PyTorch over every test stack, T2W and EPI."""
    for name in ("openvino", "onnxruntime"):
        assert reference_masks.scores(create_backend(name, device="cpu"))["dice_vs_fp32_torch"] >= 0.999, name


def test_engine_errors_speak_of_settings_not_command_line_flags(tmp_path):
    """The Slicer panel shows engine errors word for word: no `--flag` in them (the CLI adds its own)."""
    from FetalBrainSegLib.cli import in_flag_words

    failures = [
        lambda: create_backend("torch", precision="int8"),
        lambda: create_backend("onnxruntime", precision="bf16"),
        lambda: create_backend("openvino", shipped_int8(), precision="bf16"),
        lambda: create_backend("torch", tmp_path / "m.onnx"),
        lambda: create_backend("onnxruntime", device="cuda"),
    ]
    for failure in failures:
        with pytest.raises(ValueError) as caught:
            failure()
        assert "--" not in str(caught.value) and "--" in in_flag_words(str(caught.value)), caught.value


def test_reduced_precisions_are_only_used_when_asked_for_and_only_where_they_run(tmp_path):
    assert create_backend("auto", device="cpu").precision == "fp32"
    with pytest.raises(ValueError, match="openvino backend only"):
        create_backend("onnxruntime", device="cpu", precision="bf16")
    with pytest.raises(ValueError, match="precision int8 runs with the onnxruntime or openvino backend"):
        create_backend("torch", device="cpu", precision="int8")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        create_backend("auto", precision="fp16")
    with pytest.raises(FileNotFoundError, match="no INT8 calibration for model.onnx .*fetalbrainseg quantize"):
        create_backend("onnxruntime", tmp_path / "model.pt", precision="int8")
    with pytest.raises(ValueError, match="INT8 model; it runs with precision int8"):
        create_backend("openvino", shipped_int8(), precision="bf16")
    for name in ("auto", "onnxruntime", "openvino"):
        assert create_backend(name, device="cpu", precision="int8").precision == "int8"
    # an INT8 file passed as the weights says what it is
    assert create_backend("onnxruntime", shipped_int8()).describe() == "onnxruntime int8 on cpu"


def test_int8_is_as_accurate_as_fp32_against_manual_masks(reference_masks):
    """The shipped INT8 model, in both runtimes, over every test slice (T2W and EPI): as close
    to the manual masks as fp32 PyTorch, though only within Dice 0.985-0.99 of fp32's own masks
    (hence not a default; the figures are in docs/results/latency.md)."""
    fp32_vs_manual = pooled_dice(reference_masks.fp32, reference_masks.manual)
    for name in ("onnxruntime", "openvino"):
        scores = reference_masks.scores(create_backend(name, device="cpu", precision="int8"))
        assert scores["dice_vs_manual"] >= fp32_vs_manual - 0.005, name
        assert scores["dice_vs_fp32_torch"] >= 0.985, name  # 0.989-0.99 measured with the shipped weights


def test_the_int8_model_is_built_from_the_shipped_calibration_as_recorded_and_rebuilt_when_corrupt(
    manifest_path, manifest, tmp_path, capsys
):
    """No INT8 model is committed: the shipped calibration (activation ranges, kilobytes) builds it on first use,
    into the user's cache folder, the same bit for bit as the `quantize` command records it; a corrupt cached
    model is rebuilt, and a calibration recorded for other weights is refused."""
    import onnx
    import onnxruntime

    from FetalBrainSegLib.cli import main

    source = onnx_path_for(default_weights_path())
    calibration = calibration_path_for(source)
    assert calibration.stat().st_size < 100_000
    record = read_calibration(calibration)
    built = shipped_int8()
    assert built.is_relative_to(cache_folder()) and not built.is_relative_to(REPO_ROOT)  # never in the repository
    graph = onnx.load(str(built)).graph
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 20 and len(int8_weights) >= 20
    backend = OnnxRuntimeBackend(built)
    assert backend.metadata["preprocessing"] == TorchBackend(default_weights_path(), "cpu").metadata["preprocessing"]
    slices = backend.metadata["quantization"]["calibration"]["slices"]
    train_stacks = {r.name for r in manifest if r.split == "train"}
    assert len(slices) >= 64 and {name for name, _ in slices} <= train_stacks  # by name: the data set may grow
    if (record["onnxruntime"], record["onnx"]) == (onnxruntime.__version__, onnx.__version__):
        assert sha256(built) == record["int8_sha256"]  # what was recorded is what users get
    # recording the calibration again on its slices gives the same ranges, and the same model
    again = tmp_path / "again.int8-calibration.json"
    assert main(["quantize", "--manifest", str(manifest_path), "--calibration-from", str(calibration), "-o", str(again),
                 "--int8-model", str(tmp_path / "again.int8.onnx")]) == 0  # fmt: skip
    assert json.loads(again.read_text())["data"] == json.loads(calibration.read_text())["data"]
    assert sha256(tmp_path / "again.int8.onnx") == sha256(built)

    built.write_bytes(built.read_bytes()[:1000])  # a half-copied cache
    assert int8_model(source) == built and sha256(built) == sha256(tmp_path / "again.int8.onnx")
    other = tmp_path / "other.onnx"
    other.write_bytes(source.read_bytes() + b" ")
    calibration_path_for(other).write_text(calibration.read_text())
    with pytest.raises(ValueError, match="recorded for other weights than other.onnx.*fetalbrainseg quantize"):
        int8_model(other)
    assert (
        main(["quantize", "--weights", str(built), "--manifest", str(manifest_path), "-o", str(tmp_path / "t.json")])
        != 0
    )
    assert "already quantized; start from the fp32 ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()
