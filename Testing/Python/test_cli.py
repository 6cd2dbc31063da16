"""The command line end to end on real shared stacks, with the shipped weights."""

import contextlib
import csv
import functools
import http.server
import io
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import dice, load_pair, with_ctrl_c

from FetalBrainSegLib.checksums import sha256
from FetalBrainSegLib.cli import main
from FetalBrainSegLib.engine.stack import Stack
from FetalBrainSegLib.engine.volume_io import read_volume, write_volume
from FetalBrainSegLib.samples import SAMPLE_NAME, SAMPLE_SHA256

pytestmark = pytest.mark.usefixtures("network_answers_reused")  # conftest.py NetworkAnswers

ONE_PASS = ("--zoom", "1")  # where zoom is not what a test is about: one pass, the same network input


def run_cli(*args) -> subprocess.CompletedProcess:
    """The command line in this process (`main`, what the console script calls): its exit status and what it
    printed, without an interpreter and a model load per call. Signals and killed processes use run_cli_process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit_:  # argparse: --version, --help, bad usage
            status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def run_cli_process(*args) -> subprocess.CompletedProcess:
    """The installed console script in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "FetalBrainSegLib", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def test_segment_writes_masks_on_the_input_grid_and_never_overwrites(tmp_path, t2w_test_record):
    image = tmp_path / "in" / "stack.nii.gz"
    image.parent.mkdir()
    shutil.copy(t2w_test_record.image, image)
    before = image.read_bytes()
    done = run_cli("segment", image, "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    mask_path = tmp_path / "out" / "stack_brainmask.nii.gz"
    assert "12 slices" in done.stdout and "slices/s" in done.stdout
    # progress per pass: the head-size adaptation's second pass starts the slices over under its own label
    labels = [line.split(" [")[0] for line in done.stderr.splitlines() if " [" in line]
    assert labels[0] == "stack.nii.gz" and re.fullmatch(r"stack\.nii\.gz \(second pass, zoom 1\.\d\d\)", labels[-1])
    mask, source = read_volume(mask_path), read_volume(image)
    np.testing.assert_array_equal(mask.affine, source.affine)
    assert mask.data.shape == source.data.shape and set(np.unique(mask.data)) <= {0, 1}
    from FetalBrainSegLib.engine.inference import Segmenter

    api = Segmenter(device="cpu").segment(read_volume(image)).mask  # the CLI is the API, voxel for voxel
    np.testing.assert_array_equal(mask.data, api)
    assert dice(mask.data, load_pair(t2w_test_record)[1]) > 0.6  # and finds the brain (a sanity floor)
    assert image.read_bytes() == before

    stamp = mask_path.stat().st_mtime_ns
    again = run_cli("segment", image, "-o", tmp_path / "out")  # a rerun resumes: the finished mask is kept
    assert again.returncode == 0 and "skipped, its mask is already there" in again.stdout, again.stderr
    assert mask_path.stat().st_mtime_ns == stamp
    assert run_cli("segment", image, "-o", tmp_path / "out", "--overwrite", "--quiet").returncode == 0
    assert mask_path.stat().st_mtime_ns != stamp


def test_an_input_is_never_overwritten_even_when_it_looks_like_an_output(tmp_path, t2w_test_record):
    shutil.copy(t2w_test_record.image, tmp_path / "a.nii.gz")
    shutil.copy(t2w_test_record.image, tmp_path / "a_brainmask.nii.gz")
    before = (tmp_path / "a_brainmask.nii.gz").read_bytes()
    done = run_cli("segment", tmp_path / "a.nii.gz", tmp_path / "a_brainmask.nii.gz", "--overwrite", "--quiet")
    assert "is one of the inputs; it is never overwritten" in done.stderr
    assert (tmp_path / "a_brainmask.nii.gz").read_bytes() == before


def test_nrrd_in_gives_nrrd_out_on_the_same_geometry(tmp_path, t2w_test_record):
    volume = read_volume(t2w_test_record.image)
    write_volume(volume.data, volume.affine, tmp_path / "stack.nrrd")
    assert main(["segment", str(tmp_path / "stack.nrrd"), "--quiet"]) == 0
    mask = read_volume(tmp_path / "stack_brainmask.nrrd")
    assert mask.format == "nrrd" and mask.data.dtype == np.uint8
    np.testing.assert_allclose(mask.affine, volume.affine, atol=1e-6)


def test_each_bad_input_gets_one_clear_line_and_the_good_ones_still_get_done(tmp_path, t2w_test_record):
    folder = tmp_path / "stacks"
    folder.mkdir()
    shutil.copy(t2w_test_record.image, folder / "good.nii.gz")
    (folder / "text.nii.gz").write_text("not an image")
    write_volume(np.random.rand(64, 64, 1).astype(np.float32), np.diag([1, 1, 3, 1.0]), folder / "flat.nii.gz")
    write_volume(np.random.rand(16, 16, 4, 3).astype(np.float32), np.eye(4), folder / "series.nii.gz")
    nan = np.random.rand(32, 32, 5).astype(np.float32)
    nan[3, 3, 3] = np.nan
    write_volume(nan, np.eye(4), folder / "nan.nii.gz")
    write_volume(np.zeros((32, 32, 5), np.int16), np.eye(4), folder / "blank.nii.gz")
    write_volume(np.zeros((0, 32, 5), np.int16), np.eye(4), folder / "empty.nrrd")
    done = run_cli("segment", folder, tmp_path / "missing.nii.gz", "-o", tmp_path / "out")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    expected = {
        "text.nii.gz": "not a NIfTI",
        "flat.nii.gz": "single slice",
        "series.nii.gz": "4D image",
        "nan.nii.gz": "NaN",
        "blank.nii.gz": "same intensity",
        "empty.nrrd": "empty",
        "missing.nii.gz": "no such file",
    }
    assert len(errors) == len(expected)
    for name, reason in expected.items():
        assert any(name in line and reason in line for line in errors), (name, errors)
    assert "6 input(s) failed" not in done.stdout and "7 input(s) failed" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_brainmask.nii.gz"]


def test_evaluate_writes_per_slice_scores_and_a_summary(tmp_path, manifest_path, manifest):
    args = ["evaluate", "--manifest", str(manifest_path), "--split", "test", "--modalities", "T2W", *ONE_PASS]
    assert main([*args, "-o", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "slices.csv").open()))
    scored = [r for r in manifest if r.split == "test" and r.modality == "T2W" and r.mask is not None]
    assert {r["stack"] for r in rows} == {r.name for r in scored}
    assert len(rows) == sum(Stack(read_volume(r.image)).num_slices for r in scored)
    summary = (tmp_path / "summary.md").read_text()
    brain = [float(r["dice"]) for r in rows if r["has_brain"] == "True"]
    overall = np.mean([float(r["dice"]) for r in rows])
    assert f"**all T2W** | {len(rows)} | {overall:.4f} |" in summary  # the summary is the CSV's mean
    assert 0 < len(brain) < len(rows) and np.mean(brain) > 0.75  # a sanity floor; the figures are in the README


def test_evaluate_scores_the_validation_stacks_recorded_in_the_weights(tmp_path, manifest_path, manifest):
    """--split validation: the stacks held out of the weights' training, read from the ONNX model's own
    record (no PyTorch needed), so a user scores their weights before they look at the test split."""
    from FetalBrainSegLib.engine.weights_record import validation_stacks
    from FetalBrainSegLib.resources import default_weights_path

    args = ["evaluate", "--manifest", str(manifest_path), "--split", "validation", "--modalities", "EPI", *ONE_PASS]
    assert main([*args, "--backend", "onnxruntime", "--quiet", "-o", str(tmp_path)]) == 0
    recorded = set(validation_stacks(default_weights_path()))
    expected = {r.name for r in manifest if r.name in recorded and r.modality == "EPI"}
    rows = list(csv.DictReader((tmp_path / "slices.csv").open()))
    assert expected and {r["stack"] for r in rows} == expected
    assert not {r.name for r in manifest if r.split == "test"} & expected


def test_a_record_without_validation_stacks_is_refused_by_name():
    """The one reading of a weights record's validation stacks, for the CLI (from an ONNX model's metadata)
    and for the scripts (engine.weights_record.validation_stacks)."""
    from FetalBrainSegLib.models.file_format import recorded_validation_stacks

    assert recorded_validation_stacks({"training": {"val_stacks": ["a", "b"]}}, "w.onnx") == ("a", "b")
    for record in ({}, {"training": {}}, {"training": {"val_stacks": []}}):
        with pytest.raises(ValueError, match="mine.onnx records no validation stacks"):
            recorded_validation_stacks(record, "mine.onnx")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def sample_server(tmp_path, shared_data):
    """A loopback HTTP server in place of the public repository: the sample, and a corrupted copy."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(shared_data / "samples" / SAMPLE_NAME, served / "fetus_03.nii.gz")
    (served / "corrupt.nii.gz").write_bytes((served / "fetus_03.nii.gz").read_bytes()[:-10] + b"0123456789")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_demo_downloads_checks_caches_and_writes_a_montage(tmp_path, sample_server, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FETALBRAINSEG_CACHE", str(cache))
    bad = main(["demo", "--url", f"{sample_server}/corrupt.nii.gz", "-o", str(tmp_path / "demo")])
    assert bad == 1 and not any(cache.iterdir())

    assert main(["demo", "--url", f"{sample_server}/fetus_03.nii.gz", "-o", str(tmp_path / "demo")]) == 0
    assert sha256(cache / SAMPLE_NAME) == SAMPLE_SHA256
    png = (tmp_path / "demo" / "f0832s1_fetus_03_montage.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and int.from_bytes(png[16:20], "big") == 4 * 256
    mask = read_volume(tmp_path / "demo" / "f0832s1_fetus_03_brainmask.nii.gz")
    assert mask.data.shape == (256, 256, 44) and 5 < mask.data.any(axis=(0, 1)).sum() < 44

    # cached: a dead URL no longer matters
    again = ["demo", "--url", "http://127.0.0.1:9/x", "-o", str(tmp_path / "demo"), "--overwrite", *ONE_PASS]
    assert main(again) == 0


def test_demo_without_network_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FETALBRAINSEG_CACHE", str(tmp_path / "cache"))
    done = run_cli("demo", "--url", "http://127.0.0.1:9/fetus_03.nii.gz", "-o", tmp_path / "demo")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "--input" in done.stderr
    assert "shared/data/samples/f0832s1_fetus_03.nii.gz" in done.stderr  # where a copy is, offline


def test_demo_offline_uses_the_shared_datas_checked_copy_of_the_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("FETALBRAINSEG_CACHE", str(tmp_path / "empty-cache"))
    done = run_cli("demo", "-o", tmp_path / "demo", "--quiet", "--backend", "onnxruntime", *ONE_PASS)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "demo" / "f0832s1_fetus_03_brainmask.nii.gz").is_file()
    assert not (tmp_path / "empty-cache" / SAMPLE_NAME).exists()  # nothing downloaded


@pytest.mark.parametrize(
    "options,reason",
    [
        (["--threshold", "1.5"], "threshold"),
        (["--weights", "missing.pt"], "weights file not found"),
        (["--backend", "onnxruntime", "--precision", "bf16"], "--precision bf16 is offered by --backend openvino only"),
        (["--backend", "torch", "--precision", "int8"], "--precision int8 runs with --backend onnxruntime or openvino"),
    ],
)
def test_bad_settings_get_one_line_and_exit_status_2(tmp_path, t2w_test_record, options, reason):
    done = run_cli("segment", t2w_test_record.image, "-o", tmp_path, *options)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and reason in done.stderr and done.stderr.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_segment_runs_any_registered_model_named_with_model(tmp_path, t2w_test_record, capsys):
    import torch

    from experiments import networks  # noqa: F401  (registers dfanet, a network the product does not ship)
    from FetalBrainSegLib.models.registry import build_model
    from FetalBrainSegLib.models.weights import save_weights
    from FetalBrainSegLib.resources import default_weights_path

    torch.manual_seed(0)
    weights = tmp_path / "dfanet.pt"
    save_weights(weights, build_model("dfanet").eval(), "dfanet")
    assert (
        main(
            [
                "segment",
                str(t2w_test_record.image),
                "-o",
                str(tmp_path / "out"),
                "--model",
                "dfanet",
                "--weights",
                str(weights),
                "--backend",
                "torch",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    mask = read_volume(tmp_path / "out" / "e2mip_testing_0000_brainmask.nii.gz")
    assert mask.data.shape == read_volume(t2w_test_record.image).data.shape
    dfanet = ["--model", "dfanet", "--weights", str(default_weights_path())]
    assert main(["segment", str(t2w_test_record.image), "-o", str(tmp_path / "x"), *dfanet]) == 2
    assert "holds a rfbsnet network, not dfanet" in capsys.readouterr().err
    assert main(["segment", str(t2w_test_record.image), "-o", str(tmp_path / "x"), "--model", "unet"]) == 2
    assert re.search("no shipped weights for unet .* --weights runs/unet/best.pt", capsys.readouterr().err)
    assert main(["segment", str(t2w_test_record.image), "-o", str(tmp_path / "x"), "--model", "unet3d"]) != 0
    assert "unknown model 'unet3d'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_ctrl_c_prints_one_line_exits_130_and_leaves_nothing_half_written(tmp_path, shared_data):
    import signal
    import time

    out = tmp_path / "masks"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "FetalBrainSegLib",
            "segment",
            str(shared_data / "fetal-mri" / "images"),
            "-o",
            str(out),
            "--quiet",
            "--backend",
            "onnxruntime",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=with_ctrl_c,
    )
    deadline = time.monotonic() + 300
    while not list(out.glob("*_brainmask.nii.gz")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted: no mask was half-written; finished masks are kept"]
    written = list(out.iterdir())
    assert written and all(p.name.endswith("_brainmask.nii.gz") for p in written)  # no temporary files
    for mask in written:
        assert read_volume(mask).data.max() <= 1  # each one whole


@pytest.mark.parametrize(
    "folder,reason",
    [
        ("/sys/fetalbrainseg-masks", "cannot create the output folder"),
        ("/proc/self", "cannot write in the output folder"),
    ],
)
def test_an_unwritable_output_folder_is_refused_before_any_work(t2w_test_record, folder, reason):
    done = run_cli("segment", t2w_test_record.image, "-o", folder, "--quiet")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {reason} {folder} (") and done.stderr.count("\n") == 1
    assert ".part" not in done.stderr and not done.stdout


def test_an_output_folder_that_is_a_file_gets_a_plain_error(t2w_test_record, tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    done = run_cli("segment", t2w_test_record.image, "-o", existing, "--quiet")
    assert done.returncode == 2 and done.stderr == f"error: {existing} is a file, not a folder\n"
    assert existing.read_text() == "mine"


def test_one_file_given_in_two_spellings_is_segmented_once(t2w_test_record, tmp_path, monkeypatch):
    monkeypatch.chdir(t2w_test_record.image.parent)
    done = run_cli("segment", f"./{t2w_test_record.image.name}", t2w_test_record.image, "-o", tmp_path, "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("->") == 1 and "segmented 1 stack(s)" in done.stdout


def test_refusals_are_error_lines_and_the_others_are_done(t2w_test_record, tmp_path):
    (tmp_path / "e2mip_testing_0000_brainmask.nii.gz").write_text("an earlier mask")
    other = tmp_path / "other.nii.gz"
    shutil.copy(t2w_test_record.image, other)
    done = run_cli("segment", t2w_test_record.image, other, "-o", tmp_path, "--quiet")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {t2w_test_record.image}: ") and "already exists" in done.stderr
    assert "segmented 1 stack(s)" in done.stdout and "1 input(s) failed" in done.stdout


def test_every_command_has_a_description_and_every_option_its_help_and_default():
    import argparse

    from FetalBrainSegLib import __version__
    from FetalBrainSegLib.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, page in commands.choices.items():
        assert page.description, name
        for action in page._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, (name, action.option_strings or action.dest)
            plain_flag = isinstance(
                action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._AppendAction)
            )
            if action.option_strings and action.default is not None and not plain_flag:
                assert "default" in action.help, (name, action.option_strings)
    assert run_cli("--version").stdout.strip() == f"fetalbrainseg {__version__}"


def test_a_damaged_stack_in_a_batch_gets_an_error_line_and_the_good_ones_their_masks(tmp_path, t2w_test_record):
    good = t2w_test_record.image.read_bytes()
    damaged = tmp_path / "inputs" / "a_damaged.nii.gz"
    damaged.parent.mkdir()
    damaged.write_bytes(good[:30] + bytes(b ^ 0xFF for b in good[30:90]) + good[90:])
    shutil.copy(t2w_test_record.image, tmp_path / "inputs" / "b_good.nii.gz")
    done = run_cli("segment", tmp_path / "inputs", "-o", tmp_path / "masks", "--quiet")
    assert done.returncode == 1
    assert done.stderr.startswith("error: a_damaged.nii.gz: corrupt gzip data") and done.stderr.count("\n") == 1
    assert (tmp_path / "masks" / "b_good_brainmask.nii.gz").is_file()


def test_flip_averaging_is_the_engines(tmp_path, t2w_test_record):
    done = run_cli(
        "segment", t2w_test_record.image, "-o", tmp_path, "--quiet", "--tta", "--backend", "onnxruntime", *ONE_PASS
    )
    assert done.returncode == 0, done.stderr
    averaged = read_volume(tmp_path / "e2mip_testing_0000_brainmask.nii.gz").data
    from FetalBrainSegLib.engine.inference import Segmenter

    volume = read_volume(t2w_test_record.image)
    assert np.array_equal(
        averaged, Segmenter(device="cpu", backend="onnxruntime", tta=True, zoom=1).segment(volume).mask
    )
    assert not np.array_equal(averaged, Segmenter(device="cpu", backend="onnxruntime", zoom=1).segment(volume).mask)


def test_a_cohort_report_lists_every_input_and_a_rerun_skips_finished_stacks(manifest, tmp_path):
    """Issue 14 (in part): one row per input, as each finishes; complete masks are skipped on a rerun,
    others are refused and left alone."""
    import csv

    records = [r for r in manifest if r.split == "test"][:3]
    folder = tmp_path / "stacks"
    folder.mkdir()
    for record in records:
        shutil.copy(record.image, folder / record.image.name)
    (folder / "broken.nii.gz").write_text("not an image")
    out, report = tmp_path / "masks", tmp_path / "report.csv"
    first = run_cli("segment", folder, "-o", out, "--report", report, "--quiet", *ONE_PASS)
    assert first.returncode == 1  # the broken input
    rows = list(csv.DictReader(report.open()))
    assert sorted(r["status"] for r in rows) == ["done"] * len(records) + ["failed"]
    for row in rows:
        if row["status"] == "failed":
            assert row["input"].endswith("broken.nii.gz") and row["error"] and not Path(row["output"]).exists()
    _assert_rows_match_masks([row for row in rows if row["status"] == "done"])

    (folder / "broken.nii.gz").unlink()
    wrong = out / f"{records[0].image.name.split('.')[0]}_brainmask.nii.gz"
    write_volume(np.zeros((4, 4, 4), np.uint8), np.eye(4), wrong)  # not this stack's mask: never replaced
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_cli("segment", folder, "-o", out, "--report", report, "--quiet", *ONE_PASS)
    assert again.returncode == 1 and "not on this stack's grid" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    rerun = list(csv.DictReader(report.open()))[len(rows) :]  # appended below the first run's rows
    assert sorted(r["status"] for r in rerun) == ["failed"] + ["skipped"] * (len(records) - 1)
    assert "skipped (complete masks already there)" in again.stdout


def _assert_rows_match_masks(rows: list[dict], untimed_allowed: bool = False) -> None:
    """Each finished stack's report row says what its mask file holds. `untimed_allowed`: after Ctrl-C, a mask
    found on disk whose worker's answer never came back has no seconds and worker."""
    for row in rows:
        volume, mask = read_volume(row["input"]), read_volume(row["output"]).data
        axis = Stack(volume).axis
        assert int(row["slices"]) == mask.shape[axis]
        assert int(row["brain_slices"]) == int(np.moveaxis(mask, axis, 0).any(axis=(1, 2)).sum())
        voxel_ml = abs(np.linalg.det(volume.affine[:3, :3])) / 1000
        assert float(row["brain_volume_ml"]) == pytest.approx(mask.sum() * voxel_ml, abs=0.01)
        if untimed_allowed and not row["seconds"]:
            assert not row["flagged_slices"] and not row["worker"]  # what only the worker knew is left blank
            continue
        assert int(row["flagged_slices"]) <= int(row["slices"]) and float(row["seconds"]) > 0 and row["worker"]


def _worker_pids(parent: int) -> list[int]:
    """The pool's worker processes under the command (spawned interpreters, not the resource tracker)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in command and b"resource_tracker" not in command:
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def stacks_and_single_process_masks(manifest, tmp_path_factory) -> tuple[Path, Path]:
    """Two copies of the T2W test stacks (enough that some are still queued when a worker is killed),
    and their masks from one process, made once for the workers and the Dask tests (in this process:
    which process runs the single-process reference is not what they test)."""
    root = tmp_path_factory.mktemp("cohort")
    folder = root / "stacks"
    folder.mkdir()
    for n in range(2):
        for record in (r for r in manifest if r.split == "test" and r.modality == "T2W"):
            shutil.copy(record.image, folder / f"{n}_{record.image.name}")
    assert main(["segment", str(folder), "-o", str(root / "single"), "--quiet", *ONE_PASS]) == 0
    return folder, root / "single"


def _run_killing_a_worker(arguments: list, report: Path, worker_pids) -> tuple[str, int]:
    """Run `segment` with `arguments`; once the report has a finished stack, SIGKILL one of the
    worker processes that worker_pids(command's pid) lists. Returns (stdout, killed pid)."""
    import signal
    import time

    command = [sys.executable, "-m", "FetalBrainSegLib", "segment", *arguments, "--report", report, "--quiet"]
    process = subprocess.Popen(list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        rows = list(csv.DictReader(report.open())) if report.exists() else []
        workers = worker_pids(process.pid)
        if rows and workers:  # one stack is done, others are under way or queued
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert killed is not None, "the run ended before a worker could be killed"
    return out, killed


def _assert_every_stack_done_as_in_one_process(report: Path, masks: Path, single: Path) -> list[dict]:
    rows = list(csv.DictReader(report.open()))
    stacks = len(list(single.iterdir()))
    assert sorted(r["status"] for r in rows) == ["done"] * stacks and len({r["worker"] for r in rows}) >= 2
    assert not [p for p in masks.iterdir() if not p.name.endswith("_brainmask.nii.gz")]  # no .part left
    for mask in single.iterdir():
        np.testing.assert_array_equal(read_volume(masks / mask.name).data, read_volume(mask).data)
    _assert_rows_match_masks(rows)
    return rows


def _interrupt_after_the_first_mask(arguments: list, report: Path, masks: Path) -> str:
    """Run `segment` with `arguments` as a terminal would, and press Ctrl-C (SIGINT to the whole process group,
    workers included) once the report has a finished stack. It must stop within seconds (it ran on for two
    minutes), and its report must list the masks on disk, row for row. Returns its stdout."""
    import signal
    import time

    command = [sys.executable, "-m", "FetalBrainSegLib", "segment", *arguments, "-o", masks, "--report", report]
    process = subprocess.Popen(
        list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=with_ctrl_c, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if report.exists() and len(list(csv.DictReader(report.open()))) > 0:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=30)  # before the fix: the queued stacks all ran first
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: no mask was half-written; finished masks are kept", err
    rows = list(csv.DictReader(report.open()))
    on_disk = sorted(p.name for p in masks.iterdir())
    assert all(name.endswith("_brainmask.nii.gz") for name in on_disk)  # nothing half-written
    assert sorted(Path(r["output"]).name for r in rows) == on_disk and {r["status"] for r in rows} == {"done"}
    assert 0 < len(on_disk) < len(list(Path(arguments[0]).iterdir()))  # stopped before the end
    _assert_rows_match_masks(rows, untimed_allowed=True)
    return out


def test_ctrl_c_stops_the_workers_at_once_and_the_report_lists_the_masks_on_disk(
    stacks_and_single_process_masks, tmp_path
):
    """Issue 30: `--workers 2` and Ctrl-C went on for minutes, and its report missed masks; nothing was printed
    before the batch ended."""
    folder, _ = stacks_and_single_process_masks
    out = _interrupt_after_the_first_mask(
        [folder, "--workers", 2, "--quiet", *ONE_PASS], tmp_path / "w.csv", tmp_path / "w"
    )
    stacks = len(list(folder.iterdir()))
    assert f"[1/{stacks}] " in out  # each stack's line as it finishes


def test_workers_give_the_single_process_masks_and_survive_a_killed_worker(stacks_and_single_process_masks, tmp_path):
    """Issue 14: `--workers 2`, each worker with its own model; a worker killed mid-run costs nothing
    but time: every stack is done, nothing is half-written."""
    folder, single = stacks_and_single_process_masks
    report = tmp_path / "report.csv"
    out, _ = _run_killing_a_worker([folder, "-o", tmp_path / "pool", "--workers", 2, *ONE_PASS], report, _worker_pids)
    _assert_every_stack_done_as_in_one_process(report, tmp_path / "pool", single)
    assert re.search(r"slices/s\) with \w+ fp32 on cpu on 2 workers", out)  # the runtime, as the workers said


def test_ctrl_c_between_two_finished_stacks_stops_the_workers_before_the_report_is_made(
    stacks_and_single_process_masks, tmp_path
):
    """Ctrl-C can land while a finished stack is reported, outside the workers' generator: its clean-up then
    waited for garbage collection, and the workers wrote masks after the report (seen once with Dask in CI)."""
    from functools import partial

    from FetalBrainSegLib.engine.cohort import plan_cohort
    from FetalBrainSegLib.engine.cohort_run import run_cohort
    from FetalBrainSegLib.engine.inference import Segmenter

    folder, _ = stacks_and_single_process_masks
    plan = plan_cohort(sorted(folder.iterdir()), tmp_path / "masks", overwrite=False)

    def ctrl_c_on_the_first_line(line: str) -> None:
        raise KeyboardInterrupt

    recipe = partial(Segmenter, device="cpu", backend="openvino", zoom="1")
    # the interruption is held, as the command's handler holds it while it says "interrupted": dropped, it would
    # free the workers' generator and hide the fault
    with pytest.raises(KeyboardInterrupt) as interrupted:
        run_cohort(plan, recipe, workers=2, report_path=tmp_path / "r.csv", say=ctrl_c_on_the_first_line)
    assert _worker_pids(os.getpid()) == [] and interrupted.type is KeyboardInterrupt  # stopped, writing nothing more
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert sorted(Path(r["output"]).name for r in rows) == sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert 0 < len(rows) < len(plan.jobs)


def test_a_parent_with_workers_checks_every_setting_and_loads_no_model(t2w_test_record, tmp_path, monkeypatch, capsys):
    """With --workers or --dask-scheduler each worker loads its model: the parent checks the settings as a
    Segmenter would, before any folder is made, and loads none (issue 31)."""
    from FetalBrainSegLib.cli import build_parser
    from FetalBrainSegLib.cli.common import checked_recipe
    from FetalBrainSegLib.engine import backends
    from FetalBrainSegLib.engine.inference import Segmenter
    from FetalBrainSegLib.resources import default_weights_path

    def loaded(*args, **kwargs):
        raise AssertionError("the parent loaded a model")

    monkeypatch.setattr(Segmenter, "__init__", loaded)
    monkeypatch.setattr(backends, "create_backend", loaded)
    image, out = str(t2w_test_record.image), str(tmp_path / "never")
    recipe = checked_recipe(build_parser().parse_args(["segment", image, "--backend", "onnxruntime", "--zoom", "1"]))
    assert recipe.func is Segmenter and recipe.keywords["backend"] == "onnxruntime" and recipe.keywords["zoom"] == "1"
    for wrong, message in (
        (["--threshold", "1.5"], "threshold must lie strictly between 0 and 1"),
        (["--zoom", "9"], "zoom must lie between"),
        (["--margin-mm", "-1"], "the margin must be 0 mm or more"),
        (["--backend", "openvino", "--device", "cuda"], "--backend openvino runs on the CPU here"),
        (["--backend", "torch", "--precision", "int8"], "int8 runs with"),
        (["--model", "dfanet", "--weights", str(default_weights_path())], "holds a rfbsnet network, not dfanet"),
    ):
        assert main(["segment", image, "-o", out, "--workers", "2", *wrong]) == 2, wrong
        assert message in capsys.readouterr().err, wrong
    assert not (tmp_path / "never").exists()


def test_a_dask_cluster_gives_the_single_process_masks_survives_a_killed_worker_and_resumes(
    stacks_and_single_process_masks, tmp_path, monkeypatch, capsys
):
    """Issue 14: `--dask-scheduler` on a real LocalCluster, 2 worker processes: masks equal one process's
    voxel for voxel, a worker killed mid-run costs nothing but time, and a rerun skips every stack."""
    from distributed import Client, LocalCluster

    folder, single = stacks_and_single_process_masks
    report, masks = tmp_path / "report.csv", tmp_path / "cluster"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        address = cluster.scheduler_address
        out, _ = _run_killing_a_worker(
            [folder, "-o", masks, "--dask-scheduler", address, *ONE_PASS],
            report,
            lambda _: sorted(client.run(os.getpid).values()),
        )
        rows = _assert_every_stack_done_as_in_one_process(report, masks, single)
        assert f"on the Dask cluster at {address}" in out

        stamps = {p: p.stat().st_mtime_ns for p in masks.iterdir()}
        again = run_cli_process(
            "segment", folder, "-o", masks, "--dask-scheduler", address, "--report", report, *ONE_PASS
        )
        assert again.returncode == 0, again.stderr
        assert {p: p.stat().st_mtime_ns for p in masks.iterdir()} == stamps
        rerun = list(csv.DictReader(report.open()))[len(rows) :]
        assert [r["status"] for r in rerun] == ["skipped"] * len(rows)

        # Ctrl-C: the queued stacks are cancelled, the running ones finish, and the report lists every mask
        _interrupt_after_the_first_mask(
            [folder, "--dask-scheduler", address, *ONE_PASS], tmp_path / "c.csv", tmp_path / "c"
        )

    (masks / next(single.iterdir()).name).unlink()  # one stack left to do, and no scheduler there any more
    from FetalBrainSegLib.engine import cluster as dask_runs

    monkeypatch.setattr(dask_runs, "SCHEDULER_ANSWER_S", 1)  # the wait is not the point
    capsys.readouterr()
    assert main(["segment", str(folder), "-o", str(masks), "--dask-scheduler", address]) == 2
    gone = capsys.readouterr().err
    assert f"error: no Dask scheduler answers at '{address}'" in gone and "Traceback" not in gone


def test_first_hour_faults_get_one_line_and_the_documented_exit_status(tmp_path, t2w_test_record, capsys, monkeypatch):
    """Found trying the CLI as a new user: an empty folder and a network without weights exited 1 (settings and
    empty inputs exit 2); a bogus split was called unlabelled; evaluate's default manifest was only found from
    the repository root; `info` named a .pt that does not exist."""
    from experiments import networks  # noqa: F401  (registers unet: a network known, but not shipped)

    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty")]) == 2
    assert "no NIfTI or NRRD stacks" in capsys.readouterr().err
    assert main(["segment", str(t2w_test_record.image), "-o", str(tmp_path / "o"), "--model", "unet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no shipped weights for unet") and err.count("\n") == 1
    assert main(["evaluate", "--split", "bogus", "-o", str(tmp_path / "e")]) == 2
    assert "unknown split 'bogus'; the splits are train, test, unlabelled, validation" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # not the repository root: the default manifest is found all the same
    assert main(["evaluate", "--split", "train", "--modalities", "XYZ", "-o", str(tmp_path / "e")]) == 2
    assert "no labelled XYZ stacks in split 'train'" in capsys.readouterr().err
    assert main(["info"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("weights/rfbsnet_fetal_brain.onnx")


def test_ports_are_checked_before_anything_starts(tmp_path, capsys):
    """`serve --port 99999` and `stream --listen -5` ended in OverflowError; a busy port printed the URL first."""
    import socket

    for command in (["serve", str(tmp_path), "--port", "99999"], ["stream", "--listen", "-5"]):
        with pytest.raises(SystemExit) as exited:
            main(command)
        assert exited.value.code == 2 and "is not a port number" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "http" not in captured.out


@pytest.mark.parametrize("command", ["train", "adapt"])
def test_each_training_setting_is_declared_once_and_reaches_the_run_as_given(command):
    """Issue 31: TrainConfig was restated as argparse options, mapped back field by field, and again as flag lists
    in a script. Its fields (and AdaptSettings') now make the options: every one offered reaches the settings as
    given, and untouched ones keep the declared defaults."""
    from dataclasses import fields

    from FetalBrainSegLib.cli import build_parser
    from FetalBrainSegLib.cli.common import settings_from, settings_options
    from FetalBrainSegLib.training.config import AdaptSettings, TrainConfig

    if command == "train":
        kind, required, given = TrainConfig, ["-o", "run"], dict(manifest="m.csv", out_dir="run")
        changed = dict(model="unet", modalities=("T2W", "EPI"), steps=7, batch_size=3, lr=0.5, lr_decay=0.5,
                       lr_decay_steps=9, val_head_sizes=(0.6, 1.5), seed=4, device="cpu", precision="fp32",
                       augment=False, crop_size=0, brain_crop_share=0.5, scale_range=(0.9, 1.1), intensity="strong",
                       fov_cut=0.25, loss="dice", init="w.pt", frozen=("bottleneck",), l2sp=0.1, epoch_steps=5,
                       time_limit_minutes=2.0)  # fmt: skip
    else:
        kind, required, given = AdaptSettings, ["stack.nii.gz", "-o", "site"], dict(name="site")
        changed = dict(base="w.onnx", minutes=1.5, steps=9, lr=0.5, l2sp=0.0, frozen=(), device="cpu",
                       any_modality=True)  # fmt: skip
    assert set(changed) == {item.name for item in fields(kind) if "help" in item.metadata}  # each one tried
    parser = build_parser()
    args = parser.parse_args([command, *required, *settings_options(kind, **changed)])
    assert {name: getattr(settings_from(kind, args, **given), name) for name in changed} == changed
    assert settings_from(kind, parser.parse_args([command, *required]), **given) == kind(**given)
