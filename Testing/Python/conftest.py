"""Shared fixtures. Tests read the real fetal MRI in ../shared/data in place; when it is
missing they fail loudly (never skip), so CI cannot pass without the real data."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

# pytest-xdist's workers (pyproject's addopts) share the cores: each takes its share of threads, set before
# PyTorch starts and inherited by the programs a test runs. Two 2-thread workers on 2 cores lose time to OpenMP's
# waiting threads (739 s against 652 s for the suite, docs/results/test_suite_time.md).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from FetalBrainSegLib.engine.volume_io import read_volume  # noqa: E402
from FetalBrainSegLib.evaluation.dataset import read_manifest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "FetalBrainSeg" / "FetalBrainSegLib"
EXIT_STATUS = pytest.StashKey[int]()
SHARED_DATA = Path(os.environ.get("FETALBRAINSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
# the user's cache (the INT8 build) and data folders (site weights): the suite's own, empty at its start and
# inherited by the programs it runs, never the user's
USER_FOLDERS = Path(tempfile.mkdtemp(prefix="fetalbrainseg-tests-"))
os.environ["FETALBRAINSEG_CACHE"] = str(USER_FOLDERS / "cache")
os.environ["FETALBRAINSEG_DATA_DIR"] = str(USER_FOLDERS / "data")


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process with the tests' own exit status, once pytest has reported and cleaned up,
    skipping the interpreter's teardown: there the native libraries the suite loads together (PyTorch,
    ONNX Runtime, OpenVINO, slicer-core's VTK, Dask, Playwright) have crashed the process now and then
    (a segmentation fault after "N passed", which turned CI red)."""
    shutil.rmtree(USER_FOLDERS, ignore_errors=True)
    if EXIT_STATUS in config.stash:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash[EXIT_STATUS])


REPORT_LINE = "report_line"


@pytest.fixture
def report_line(record_property):
    """A line for the end of the test run's report (figures a test measures, such as the room left). Kept in
    the test's report, which pytest-xdist's workers send back to the run that prints the summary."""
    return lambda line: record_property(REPORT_LINE, line)


def pytest_terminal_summary(terminalreporter):
    written = set()
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, line in getattr(report, "user_properties", ()):
                if name == REPORT_LINE and line not in written:
                    written.add(line)
                    terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "fetal-mri" / "manifest.csv").is_file():
        pytest.fail(
            f"the shared fetal MRI data set is missing at {SHARED_DATA}: "
            "tests need ../shared/data beside the repository (or FETALBRAINSEG_SHARED_DATA)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def manifest_path(shared_data) -> Path:
    return shared_data / "fetal-mri" / "manifest.csv"


@pytest.fixture(scope="session")
def manifest(manifest_path):
    return read_manifest(manifest_path)


@pytest.fixture(scope="session")
def t2w_test_record(manifest):
    """The smallest labelled T2W test stack: e2mip_testing_0000 (12 slices, 1x1x3.5 mm)."""
    return next(r for r in manifest if r.name == "e2mip_testing_0000")


@pytest.fixture(scope="session")
def segmenter():
    from FetalBrainSegLib.engine.inference import Segmenter

    return Segmenter(device="cpu")


def subset_manifest(manifest_path: Path, keep, folder: Path) -> Path:
    """A manifest of the rows `keep(row)` accepts, beside links to the shared images and masks: training and the
    comparison load only what a test needs, however large the shared data grows."""
    import csv

    rows = list(csv.DictReader(manifest_path.open()))
    folder.mkdir(parents=True, exist_ok=True)
    for sub_folder in ("images", "masks"):
        (folder / sub_folder).symlink_to(manifest_path.parent / sub_folder)
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(row for row in rows if keep(row))
    return folder / "manifest.csv"


def rotation(angles_deg) -> np.ndarray:
    """A 3D rotation matrix from three Euler angles: oblique acquisitions in tests."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks over all their voxels (non-zero is brain): the engine's own, evaluation.metrics."""
    from FetalBrainSegLib.evaluation.metrics import pooled_dice

    return pooled_dice(a, b)


def load_pair(record):
    return read_volume(record.image), read_volume(record.mask).data


def imports_of(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(kind, target) per import: ("package", parts inside FetalBrainSegLib) or ("external", top-level name)."""
    relative = path.relative_to(PACKAGE).with_suffix("").parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                found.append(
                    ("package", tuple(names[1:])) if names[0] == "FetalBrainSegLib" else ("external", (names[0],))
                )
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = (node.module or "").split(".")
                found.append(
                    ("package", tuple(names[1:])) if names[0] == "FetalBrainSegLib" else ("external", (names[0],))
                )
                continue
            anchor = relative[:-1][: len(relative) - node.level] if node.level > 1 else relative[:-1]
            target = anchor + tuple((node.module or "").split(".")) if node.module else anchor
            if not node.module:  # from . import x: each name is a module
                found += [("package", anchor + (alias.name,)) for alias in node.names]
            else:
                found.append(("package", target))
    return found


def module_closure(start: Path) -> set[Path]:
    """The package files `start` imports, directly or not, with the __init__ of every package on the way."""
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        for kind, target in imports_of(path) if path.is_relative_to(PACKAGE) else _absolute_imports(path):
            if kind != "package":
                continue
            for depth in range(len(target) + 1):
                for candidate in (
                    PACKAGE.joinpath(*target[:depth], "__init__.py"),
                    PACKAGE.joinpath(*target[:depth]).with_suffix(".py") if depth else None,
                ):
                    if candidate is not None and candidate.is_file() and candidate not in seen:
                        seen.add(candidate)
                        todo.append(candidate)
    return seen


def _absolute_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("FetalBrainSegLib"):
            yield "package", tuple(node.module.split(".")[1:])


def with_ctrl_c() -> None:
    """preexec_fn of a child that a test interrupts: Ctrl-C's default disposition. A shell starts
    background jobs with SIGINT ignored, and a child would inherit that from pytest."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class NetworkAnswers:
    """The runtimes' answers to slices they have already answered, given again from memory. A runtime is a
    deterministic function of its model file and its input, so a test sees exactly what the runtime gives, without
    waiting for it again: the suite segments the same test stacks in many tests (193 s of its 406 s of network time
    repeated, docs/results/test_suite_time.md). Opted into by modules where repeated answers are not the point
    (`pytestmark = pytest.mark.usefixtures("network_answers_reused")`); a test about timing, cancelling or a
    runtime's own behaviour is marked `network_called_for_real`. A model in memory (training's validation) has no
    file and is always called."""

    runtimes = ("TorchBackend", "OnnxRuntimeBackend", "OpenVinoBackend")

    def __init__(self):
        self.answers: dict[tuple, np.ndarray] = {}
        self.digests: dict[tuple, str] = {}
        self.reused = False

    def file_digest(self, path) -> str:
        from FetalBrainSegLib.checksums import sha256
        from FetalBrainSegLib.models.file_format import weights_file

        path = weights_file(Path(path))  # a missing .pt is read from the ONNX model beside it
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self.digests:
            self.digests[key] = sha256(path)
        return self.digests[key]

    def install(self) -> None:
        """Each runtime records the file it loads (its first argument), and answers through `answer`."""
        from FetalBrainSegLib.engine import backends

        for name in self.runtimes:
            runtime = getattr(backends, name)
            runtime.__init__ = self._recording(runtime.__init__)
            runtime.predict = self._answering(runtime.predict)

    def _recording(self, init):
        def recorded(backend, source, *args, **kwargs):
            init(backend, source, *args, **kwargs)
            # no file (TorchBackend(None, device, model, metadata)): a model in memory changes as it trains
            backend.answers_key = None if source is None else (type(backend).__name__, self.file_digest(source), args)

        return recorded

    def _answering(self, predict):
        def answer(backend, images):
            key = getattr(backend, "answers_key", None)
            if not self.reused or key is None:
                return predict(backend, images)
            import hashlib

            batch = np.ascontiguousarray(images, dtype=np.float32)
            key = (*key, batch.shape, hashlib.sha256(batch.tobytes()).hexdigest())
            if key not in self.answers:
                self.answers[key] = predict(backend, images)
            return self.answers[key].copy()

        return answer


NETWORK_ANSWERS = NetworkAnswers()
NETWORK_ANSWERS.install()


@pytest.fixture(scope="module")
def network_answers_reused():
    """For a module's tests and its module-scoped fixtures (which ask for it first): see NetworkAnswers."""
    NETWORK_ANSWERS.reused = True
    yield
    NETWORK_ANSWERS.reused = False
    NETWORK_ANSWERS.answers.clear()  # the memory goes with the module: its tests repeat each other's work most


@pytest.fixture(autouse=True)
def _network_called_for_real(request):
    if request.node.get_closest_marker("network_called_for_real") is None:
        yield
        return
    reused, NETWORK_ANSWERS.reused = NETWORK_ANSWERS.reused, False
    yield
    NETWORK_ANSWERS.reused = reused
