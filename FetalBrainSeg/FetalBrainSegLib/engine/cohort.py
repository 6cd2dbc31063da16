"""Whole folders of stacks: what a rerun may skip, the cohort report a group reads to decide which
stacks to look at (one row per input, written as each stack finishes), and segmenting on several
worker processes, each loading the model once and taking whole stacks.

A worker that dies mid-stack leaves no file behind (masks are written whole or not at all); its
stack, and any other it held, is retried on a fresh pool, up to MAX_TRIES times in all."""

from __future__ import annotations

import csv
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..atomic import remove_unfinished
from ..progress import ProgressBar
from .outputs import mask_path_for, output_folder_problem, output_problem
from .stack import slice_axis
from .volume_io import Volume, VolumeError, read_volume, write_mask
from .zoom import pass_label

MAX_TRIES = 2  # a stack whose worker died this often is reported failed

REPORT_COLUMNS = (
    "input",
    "output",
    "status",  # done, skipped (its complete mask was there), failed
    "error",
    "slices",
    "brain_slices",
    "brain_volume_ml",
    "flagged_slices",
    "seconds",
    "worker",
)


@dataclass
class CohortPlan:
    """What each input needs, decided before any work."""

    jobs: list[tuple[Path, Path]] = field(default_factory=list)  # (image, output) to segment
    skipped: list[tuple[Path, Path, dict]] = field(default_factory=list)  # finished earlier: mask figures
    refused: list[tuple[Path, Path, str]] = field(default_factory=list)  # why not


def plan_cohort(inputs: list[Path], out_dir: Path | None, overwrite: bool) -> CohortPlan:
    """Segment, skip (an earlier run's complete mask is there: a rerun resumes) or refuse each input;
    never two inputs onto one output, never an input overwritten."""
    plan, claimed = CohortPlan(), set()
    input_paths = {p.resolve() for p in inputs}
    for image in inputs:
        output = mask_path_for(image, out_dir)
        resolved = output.resolve()
        if output.exists() and not overwrite and resolved not in claimed and resolved not in input_paths:
            figures, problem = finished_mask(image, output)
            if figures is not None:
                claimed.add(resolved)
                plan.skipped.append((image, output, figures))
            else:
                plan.refused.append((image, output, problem))
            continue
        problem = output_problem(output, input_paths, claimed, overwrite) or output_folder_problem(output.parent)
        if problem:
            plan.refused.append((image, output, f"{image}: {problem}"))
            continue
        claimed.add(resolved)
        plan.jobs.append((image, output))
    return plan


def finished_mask(image: Path, output: Path) -> tuple[dict | None, str]:
    """(its figures, "") when `output` is a readable 0/1 mask on `image`'s exact grid (a finished earlier
    run's), else (None, why not)."""
    try:
        source = read_volume(image)
    except VolumeError as exc:
        return None, str(exc)
    try:
        mask = read_volume(output)
    except (VolumeError, OSError) as exc:
        problem = f"it cannot be read as a mask ({exc})"
    else:
        if mask.data.shape[:3] != source.data.shape[:3] or not np.allclose(mask.affine, source.affine, atol=1e-4):
            problem = f"it is not on this stack's grid (shape {mask.data.shape}, stack {source.data.shape})"
        elif not np.isin(np.unique(mask.data), (0, 1)).all():
            problem = "it holds values other than 0 and 1"
        else:
            return mask_figures(source, mask.data), ""
    return None, (
        f"{image}: {output} already exists, not as this stack's finished mask: {problem}; "
        "pass --overwrite to replace it"
    )


def mask_figures(volume: Volume, mask: np.ndarray) -> dict:
    """Slices, slices with brain and brain volume of a mask on `volume`'s grid."""
    mask = np.asarray(mask).reshape(volume.data.shape[:3]) > 0
    axis = slice_axis(volume.affine)
    per_slice = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).any(axis=1)
    voxel_ml = abs(np.linalg.det(np.asarray(volume.affine)[:3, :3])) / 1000.0
    return {
        "slices": int(mask.shape[axis]),
        "brain_slices": int(per_slice.sum()),
        "brain_volume_ml": round(float(mask.sum() * voxel_ml), 2),
    }


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class CohortReport:
    """A CSV opened for appending; each row is flushed to disk as soon as it is written, so a killed
    run keeps the rows of the stacks it finished. A rerun appends its own rows below."""

    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self._handle = path.open("a", newline="")
        self._writer = csv.DictWriter(self._handle, REPORT_COLUMNS)
        if new:
            self._writer.writeheader()
            self._flush()

    def write(self, **row) -> None:
        self._writer.writerow({key: row.get(key, "") for key in REPORT_COLUMNS})
        self._flush()

    def _flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def segment_to_file(segmenter, image: Path, output: Path, progress: bool = False):
    """Segment one stack and write its mask atomically; returns (volume, result)."""
    volume = read_volume(image)
    bars: dict[int, ProgressBar] = {}  # one per pass: a second pass redoes every slice at another zoom

    def show(chunk) -> None:
        if chunk.choice:  # nothing computed: the kept pass's slices, sent again
            if chunk.pass_number == 1 and progress:  # the second pass's bar said it ran: say it was not kept
                print(f"{image.name}: the second pass looked bitten; the first pass is kept", file=sys.stderr)
            return
        if chunk.pass_number not in bars:
            label = f"{image.name} ({pass_label(chunk.zoom)})" if bars else image.name
            bars[chunk.pass_number] = ProgressBar(chunk.total, label, "slices", enabled=progress)
        bars[chunk.pass_number].update(chunk.stop - chunk.start)

    result = segmenter.segment(volume, image.name, on_chunk=show)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_mask(volume, result.mask, output, segmenter.mask_description())
    if result.base_instead:
        print(f"note: {result.base_instead}", file=sys.stderr)
    return volume, result


@dataclass
class Outcome:
    """What became of one stack: its report row's figures, or the error that stopped it."""

    image: Path
    output: Path
    error: str = ""
    figures: dict | None = None  # slices, brain_slices, brain_volume_ml, flagged_slices, seconds, worker


def segment_one(segmenter, image: Path, output: Path, progress: bool = False) -> Outcome:
    start = time.perf_counter()
    try:
        volume, result = segment_to_file(segmenter, image, output, progress)
    except VolumeError as exc:
        return Outcome(image, output, str(exc))
    except OSError as exc:  # a full disk, a folder made read-only meanwhile: say it plainly
        return Outcome(image, output, f"{image}: cannot write {output} ({exc.strerror or exc})")
    figures = mask_figures(volume, result.mask)
    figures.update(
        flagged_slices=sum(review.flagged for review in result.review),
        seconds=round(time.perf_counter() - start, 3),
        worker=worker_name(),
        runtime=segmenter.backend.describe(),  # for the summary: a parent with workers loads no model
    )
    return Outcome(image, output, figures=figures)


_worker_segmenter = None  # each worker process's own, loaded once


def _start_worker(make_segmenter: Callable) -> None:
    global _worker_segmenter
    # Ctrl-C reaches every process of the terminal's group: the parent alone decides what stops, and how
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_segmenter = make_segmenter()


def _work_on(image: Path, output: Path) -> Outcome:
    return segment_one(_worker_segmenter, image, output)


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """End the workers mid-stack and drop the queued stacks: a mask is written whole or not at all. The workers
    end first, so that the pool's own thread finds them gone and closes its pipes itself; it is waited for, so
    that nothing of the pool is left to Python's exit (there it printed "OSError: [Errno 9] Bad file descriptor")."""
    processes = list(pool._processes.values())  # no public way before Python 3.14's terminate_workers()
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)
    pool.shutdown(wait=True, cancel_futures=True)


def segment_in_workers(make_segmenter: Callable, jobs: list[tuple[Path, Path]], workers: int) -> Iterator[Outcome]:
    """Segment (image, output) jobs on `workers` processes; yields each outcome as it finishes.
    `make_segmenter` must be picklable (a functools.partial of Segmenter). Ctrl-C, or closing the
    iterator, ends the workers at once, whatever they are doing."""
    tries = {job: 0 for job in jobs}
    pending = list(jobs)
    while pending:
        context = get_context("spawn")  # a clean interpreter: runtimes' threads do not survive fork
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(make_segmenter,)
        ) as pool:
            futures = {pool.submit(_work_on, *job): job for job in pending}
            for job in pending:
                tries[job] += 1
            pending = []
            try:
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        job = futures.pop(future)
                        try:
                            outcome = future.result()
                        except BrokenProcessPool:  # a worker died: every stack it or the pool still held is redone
                            if tries[job] < MAX_TRIES:
                                pending.append(job)
                                continue
                            died = f"its worker process died {tries[job]} times; not segmented"
                            outcome = Outcome(*job, f"{job[0]}: {died}")
                        yield outcome
            except BaseException:  # KeyboardInterrupt, or the caller closed the iterator (GeneratorExit)
                _stop_now(pool)
                for _, output in futures.values():
                    remove_unfinished(output)
                raise
