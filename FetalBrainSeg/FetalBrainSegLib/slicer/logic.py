"""MRML glue: the engine on a Slicer volume node, its masks into a segmentation node.

Imports `slicer` and `vtk`, never Qt: it runs in desktop Slicer and headless (the
slicer-core wheel), where the tests drive it. Everything happens in the volume's voxel
(IJK) space with its IJK-to-RAS matrix, so oblique stacks keep their geometry, and the
engine picks the slice axis from that matrix, as for files.

A run never loses the user's work: the brain segment it writes is tagged with a digest
of what it wrote, a rerun refuses to replace a segment edited since (unless asked), other
segments are never touched, a cancelled or failed run puts the previous segment back, and
`undoLastRun` puts it back after a finished one. That undo is kept here, not in the scene's
undo stack, which is off by default in Slicer (SaveStateForUndo does nothing then).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..engine.inference import DEFAULT_THRESHOLD, Chunk, ChunkedProbabilities, Segmenter, check_threshold
from ..engine.outputs import output_problem
from ..engine.review import SliceReview, provisional_reviews, review_slices
from ..engine.site_models import check_new_name, list_site_models, resolve_model
from ..engine.stack import reorder_to_grid, slice_axis, slice_to_world
from ..engine.streaming import SliceResult, SliceStream, StreamingSegmenter
from ..engine.volume_io import Volume, VolumeError, read_volume, volume_suffix, write_mask, write_volume
from ..training.config import AdaptSettings

BRAIN_SEGMENT_NAME = "Brain"
BRAIN_COLOR = (0.95, 0.35, 0.2)
SOURCE_TAG = "FetalBrainSeg.source"  # on our segment: the input volume node's ID
DIGEST_TAG = "FetalBrainSeg.maskDigest"  # on our segment: digest of the mask we last wrote
DESCRIPTION_TAG = "FetalBrainSeg.description"  # on our segment: how its mask was made (model, margin), for exports


SHIPPED_MODEL_LABEL = "Shipped weights"  # how model lists name the shipped weights
ADAPT_MINUTES = AdaptSettings.minutes  # a site model's default time budget, as the panels offer it


class EditedSegmentError(RuntimeError):
    """The brain segment was edited since FetalBrainSeg wrote it; replacing needs consent."""


def ijk_to_ras(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def volume_from_node(volume_node) -> Volume:
    """The node's voxels as an (I, J, K) array (a view) with its IJK-to-RAS matrix."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise VolumeError("the input volume has no image data")
    if volume_node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise VolumeError(
            f"{volume_node.GetName()}: is a multi-component (e.g. colour) volume; a stack must be a scalar 3D volume"
        )
    return Volume(slicer.util.arrayFromVolume(volume_node).transpose(2, 1, 0), ijk_to_ras(volume_node))


def _oriented_image(shape_ijk: tuple[int, int, int], matrix: np.ndarray, mask_ijk: np.ndarray | None = None):
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*shape_ijk)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(matrix))
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    scalars[:] = 0 if mask_ijk is None else np.asarray(mask_ijk, np.uint8).ravel(order="F")
    return image


def write_segment(segmentation_node, segment_id: str, mask_ijk: np.ndarray, ijk_to_ras_matrix: np.ndarray) -> None:
    """Replace a segment's content by a mask on a volume's voxel grid."""
    image = _oriented_image(mask_ijk.shape, ijk_to_ras_matrix, mask_ijk)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentation_node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    )


def segment_mask(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """A segment as a uint8 (I, J, K) mask on the volume's voxel grid."""
    shape = tuple(volume_node.GetImageData().GetDimensions())
    stored = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, stored)
    reference = _oriented_image(shape, ijk_to_ras(volume_node))
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(stored, reference, resampled)
    if resampled.GetPointData().GetScalars() is None:  # an empty segment
        return np.zeros(shape, np.uint8)
    values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars())
    return (values.reshape(shape, order="F") > 0).astype(np.uint8)


def segment_tag(segment, key: str) -> str | None:
    value = vtk.reference("")  # vtkSegment::GetTag returns the value through an argument
    return str(value) if segment.GetTag(key, value) else None


def mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha1(np.packbits(np.asarray(mask, bool)).tobytes()).hexdigest()


def find_brain_segment(segmentation_node) -> str | None:
    """The ID of the segment FetalBrainSeg wrote in this segmentation, if any."""
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        if segment.HasTag(SOURCE_TAG):
            return segmentation.GetNthSegmentID(index)
    return None


@dataclass
class SegmentSnapshot:
    """A segment's content and identity, kept while its scene holds another stack."""

    segment_id: str
    name: str
    color: tuple[float, float, float]
    mask: np.ndarray  # (I, J, K) on its volume's voxel grid
    ours: bool  # FetalBrainSeg's brain segment
    digest: str | None  # the digest of the mask FetalBrainSeg last wrote (differs once edited)


def snapshot_segments(segmentation_node, volume_node) -> list[SegmentSnapshot]:
    """Every segment of a segmentation, with the user's edits, as masks on the volume's grid."""
    segmentation = segmentation_node.GetSegmentation()
    snapshots = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        snapshots.append(
            SegmentSnapshot(
                segment_id,
                segment.GetName(),
                tuple(segment.GetColor()),
                segment_mask(segmentation_node, segment_id, volume_node),
                segment.HasTag(SOURCE_TAG),
                segment_tag(segment, DIGEST_TAG),
            )
        )
    return snapshots


def restore_segments(segmentation_node, volume_node, snapshots: list[SegmentSnapshot]) -> None:
    """Put kept segments back into a (new) segmentation of the same stack, replacing what it holds."""
    segmentation = segmentation_node.GetSegmentation()
    segmentation.RemoveAllSegments()
    for kept in snapshots:
        segment_id = segmentation.AddEmptySegment(kept.segment_id, kept.name, kept.color)
        write_segment(segmentation_node, segment_id, kept.mask, ijk_to_ras(volume_node))
        segment = segmentation.GetSegment(segment_id)
        if kept.ours:
            segment.SetTag(SOURCE_TAG, volume_node.GetID())
        if kept.digest is not None:
            segment.SetTag(DIGEST_TAG, kept.digest)


def write_correction(volume_node, segmentation_node, stem: Path) -> tuple[Path, Path]:
    """A corrected stack as the files adaptation reads (`stem`.nii.gz and `stem`_mask.nii.gz): the image and its
    brain segment on the image's grid."""
    segment_id = find_brain_segment(segmentation_node)
    if segment_id is None:
        raise ValueError(f"{segmentation_node.GetName()}: no FetalBrainSeg brain segment")
    matrix = ijk_to_ras(volume_node)
    image, mask = stem.with_name(f"{stem.name}.nii.gz"), stem.with_name(f"{stem.name}_mask.nii.gz")
    write_volume(np.array(volume_from_node(volume_node).data), matrix, image)
    write_volume(segment_mask(segmentation_node, segment_id, volume_node), matrix, mask)
    return image, mask


def slice_center_ras(volume_node, slice_axis: int, index: int) -> tuple[float, float, float]:
    """RAS position of the centre of one slice, to move the slice views there."""
    ijk = (np.array(volume_node.GetImageData().GetDimensions(), float) - 1) / 2
    ijk[slice_axis] = index
    return tuple(float(v) for v in (ijk_to_ras(volume_node) @ np.append(ijk, 1.0))[:3])


def poll_until(done: Callable[[], bool], late: str, poll_interval: float, timeout: float | None) -> None:
    """Call `done` every poll_interval seconds until it returns True; TimeoutError(late) after `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done():
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(late)
        time.sleep(poll_interval)


@dataclass
class SegmentationJob:
    """One run over a stack; MRML is only touched from `run` or `poll`, on the caller's thread."""

    segmenter: Segmenter
    volume_node: object
    segmentation_node: object
    segment_id: str
    previous_mask: np.ndarray | None  # None: the segment did not exist before this run
    on_progress: Callable[[SegmentationJob], None] | None = None
    threshold: float = DEFAULT_THRESHOLD  # this job's: the segmenter is shared between jobs
    state: str = "running"  # running, done, cancelled, failed
    error: str = ""
    statistics: list[SliceReview] = field(default_factory=list)  # provisional while running, final once done

    def __post_init__(self):
        view = volume_from_node(self.volume_node)  # the node's live VTK memory
        self.volume = Volume(np.array(view.data, copy=True), view.affine)  # the worker reads this copy only
        self.stack = self.segmenter.stack(self.volume, self.volume_node.GetName())
        self.mask = np.zeros(self.volume.data.shape, np.uint8)
        self._collected = ChunkedProbabilities(self.stack.slices().shape, self.segmenter.tta)
        self.slice_axis = self.stack.axis
        self.total = self.stack.num_slices
        self.done_slices = 0  # of the pass under way: a second one, at another zoom, redoes every slice
        self.zoom = self.segmenter.first_zoom  # that pass's
        self._computed_slices = 0  # over all passes, for the rate
        self._matrix = ijk_to_ras(self.volume_node)
        self._cancel = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start = time.perf_counter()
        self.seconds = 0.0
        segment = self.segmentation_node.GetSegmentation().GetSegment(self.segment_id)
        self.previous_digest = segment_tag(segment, DIGEST_TAG) if self.previous_mask is not None else None
        self.previous_description = segment_tag(segment, DESCRIPTION_TAG) or ""

    @property
    def finished(self) -> bool:
        return self.state != "running"

    @property
    def slices_per_second(self) -> float:
        """Slices the network has computed per second (a second pass counts its slices again)."""
        elapsed = self.seconds if self.finished else time.perf_counter() - self._start
        return self._computed_slices / elapsed if elapsed > 0 else 0.0

    @property
    def second_pass(self) -> bool:
        """Whether the pass under way is the head-size adaptation's second one (engine/zoom.py)."""
        return self.zoom != self.segmenter.first_zoom

    def run(self) -> SegmentationJob:
        """Compute and write every chunk on this thread (waitForCompletion)."""
        try:
            for chunk in self.segmenter.iter_chunks(self.stack, self.threshold):
                if self._cancel.is_set():
                    break
                self._apply(chunk)
        except Exception as exc:  # report, and leave the scene as it was
            self._end("failed", str(exc))
            raise
        self._end("cancelled" if self._cancel.is_set() else "done")
        return self

    def start(self) -> SegmentationJob:
        """Compute on a worker thread; call `poll` from the main thread (a timer) to write results."""

        def work():
            try:
                for chunk in self.segmenter.iter_chunks(self.stack, self.threshold):
                    if self._cancel.is_set():
                        break
                    self._queue.put(chunk)
                self._queue.put("cancelled" if self._cancel.is_set() else "done")
            except Exception as exc:  # handed to the main thread
                self._queue.put(exc)

        self._thread = threading.Thread(target=work, name="FetalBrainSeg", daemon=True)
        self._thread.start()
        return self

    def poll(self) -> bool:
        """Write the chunks computed so far into the segmentation; True once the job has ended."""
        while not self.finished:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Chunk):
                if not self._cancel.is_set():
                    self._apply(item)
            elif isinstance(item, Exception):
                self._end("failed", str(item))
            else:
                self._end("cancelled" if self._cancel.is_set() else item)
        return self.finished

    def wait(self, poll_interval: float = 0.05, timeout: float | None = None) -> SegmentationJob:
        """Poll until the background job ends (for scripts and tests; the GUI polls from a timer)."""
        poll_until(self.poll, "segmentation did not finish in time", poll_interval, timeout)
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def cancel_now(self) -> None:
        """Cancel and end at once, putting the previous segment back, without waiting for the worker
        (whose later chunks nobody reads): for a closing scene or panel. Main thread only."""
        self._cancel.set()
        if not self.finished:
            self._end("cancelled")

    def _apply(self, chunk: Chunk) -> None:
        index = [slice(None)] * 3
        index[self.slice_axis] = slice(chunk.start, chunk.stop)
        self.mask[tuple(index)] = self.stack.assemble(self.segmenter.binarize(chunk.probabilities, self.threshold))
        self._write(self.mask)
        self._collected.add(chunk)
        fresh = provisional_reviews(chunk.probabilities, self.threshold, self.stack.pixel_area, chunk.start)
        # chunks come in slice order, so this appends; a second pass at another zoom (engine/zoom.py), and
        # the choice between the passes after it, replace the rows of these slices
        self.statistics[chunk.start : chunk.stop] = fresh
        self.zoom = chunk.zoom
        if not chunk.choice:  # the choice computes nothing: the kept pass's slices, sent again
            self.done_slices = chunk.stop
            self._computed_slices += chunk.stop - chunk.start
        if self.on_progress is not None:
            self.on_progress(self)

    def _write(self, mask: np.ndarray) -> None:
        write_segment(self.segmentation_node, self.segment_id, mask, self._matrix)

    def _end(self, state: str, error: str = "") -> None:
        self.state, self.error = state, error
        self.seconds = time.perf_counter() - self._start
        segment = self.segmentation_node.GetSegmentation().GetSegment(self.segment_id)
        if state == "done":
            # masks were shown chunk by chunk; the whole-stack clean-up and review come once all slices are in
            collected = self._collected
            self.mask, self.statistics = self.segmenter.finish(
                self.stack, collected.probabilities, collected.disagreement, self.threshold, collected.pass_disagreement
            )
            self._write(self.mask)
            segment.SetTag(DIGEST_TAG, mask_digest(self.mask))
            segment.SetTag(DESCRIPTION_TAG, self.segmenter.for_stack(self.stack).mask_description())
        elif self.previous_mask is None:
            self.segmentation_node.GetSegmentation().RemoveSegment(self.segment_id)
        else:
            self._write(self.previous_mask)
        if self.on_progress is not None:
            self.on_progress(self)

    def review_now(self) -> list[SliceReview]:
        """The slice list of a finished run for its brain segment as it is now, edits included: areas and review
        flags from the current mask, confidence from this run's probabilities."""
        current = segment_mask(self.segmentation_node, self.segment_id, self.volume_node)
        collected = self._collected
        return review_slices(
            collected.probabilities,
            np.moveaxis(current, self.slice_axis, 0),
            self.stack.pixel_area,
            collected.disagreement,
            pass_disagreement=collected.pass_disagreement,
        )

    def undo(self, replace_edits: bool = False) -> None:
        """Put the brain segment back as it was before this finished run; refuses to lose edits made since."""
        if self.state != "done":
            raise ValueError("only a finished run can be undone; a cancelled or failed one already put it back")
        segmentation = self.segmentation_node.GetSegmentation()
        segment = segmentation.GetSegment(self.segment_id)
        if segment is None:
            raise ValueError("the brain segment of that run no longer exists")
        current = segment_mask(self.segmentation_node, self.segment_id, self.volume_node)
        if mask_digest(current) != mask_digest(self.mask) and not replace_edits:
            raise EditedSegmentError(
                f"the '{segment.GetName()}' segment was edited after the run; undoing the run would lose those edits"
            )
        if self.previous_mask is None:
            segmentation.RemoveSegment(self.segment_id)
        else:
            self._write(self.previous_mask)
            segment.SetTag(DIGEST_TAG, self.previous_digest or "")  # an edited segment stays protected as edited
            segment.SetTag(DESCRIPTION_TAG, self.previous_description)
        self.state = "undone"


class LiveSegmentation:
    """Segments the slices of a volume that changed since the last look, as they arrive.

    Observes the volume (a single-slice volume updated in place, or new slices of a growing
    stack). On each modification the observer, on the thread that modified the volume
    (Slicer's main thread), only finds the changed slices and queues copies of them; a worker
    thread segments them through the streaming API, and `poll` (the panel's timer, on the
    main thread) writes the answers into the brain segment, so the GUI never waits for the
    network, not even for the first pass over a whole stack. `stop()` ends the observation.
    """

    def __init__(self, streaming: StreamingSegmenter, volume_node, segmentation_node, segment_id: str):
        self.volume_node = volume_node
        self.segmentation_node = segmentation_node
        self.segment_id = segment_id
        self.results: dict[int, SliceResult] = {}  # by slice index, the newest answer of each slice
        self.error = ""  # the last slice that could not be segmented, and why
        self._answers: queue.Queue = queue.Queue()
        self._stream = SliceStream(streaming, self._answers.put, lambda index, exc: self._answers.put((index, exc)))
        self._slice_of: dict[int, tuple[int, int]] = {}  # stream index -> (series, slice index)
        self._series = 0  # a new shape or geometry starts a new series
        self._previous: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._affine: np.ndarray | None = None
        self._axis = 2
        # receivers fire ImageDataModifiedEvent, scripts (arrayFromVolumeModified) ModifiedEvent;
        # a second notification of one change finds no changed slice and does nothing
        self._observers = [
            volume_node.AddObserver(event, lambda caller, event: self.update())
            for event in (slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent, vtk.vtkCommand.ModifiedEvent)
        ]
        self.update()

    @property
    def pending(self) -> int:
        """Slices queued or being segmented, not yet written."""
        return len(self._slice_of)

    def update(self) -> list[int]:
        """Queue the changed slices for the worker; returns their indices."""
        volume = volume_from_node(self.volume_node)
        axis = slice_axis(volume.affine)
        slices = np.moveaxis(volume.data, axis, 0)
        if self._previous is None or self._previous.shape != slices.shape or axis != self._axis:
            changed = [k for k in range(len(slices)) if slices[k].any()]
            self._mask = np.zeros(volume.data.shape, np.uint8)
            self._affine, self._axis = volume.affine, axis
            self._series += 1
            self._stream.new_series()
        else:
            changed = [k for k in range(len(slices)) if not np.array_equal(slices[k], self._previous[k])]
        for k in changed:
            self._slice_of[self._stream.submit(slices[k], slice_to_world(volume.affine, axis, k))] = (self._series, k)
        self._previous = slices.copy()
        return changed

    def poll(self) -> list[int]:
        """Write the answers that came in since the last call (main thread); returns their slice indices."""
        written = []
        while True:
            try:
                answer = self._answers.get_nowait()
            except queue.Empty:
                break
            if isinstance(answer, tuple):  # (stream index, exception)
                series, k = self._slice_of.pop(answer[0])
                self.error = f"slice {k}: {answer[1]}"
                continue
            series, k = self._slice_of.pop(answer.index)
            if series != self._series:
                continue  # a slice of a stack that has since changed shape
            np.moveaxis(self._mask, self._axis, 0)[k] = answer.mask
            self.results[k] = answer
            written.append(k)
        if written and self._observers:
            write_segment(self.segmentation_node, self.segment_id, self._mask, self._affine)
            segment = self.segmentation_node.GetSegmentation().GetSegment(self.segment_id)
            segment.SetTag(DIGEST_TAG, mask_digest(self._mask))  # ours, not a user's edit
        return written

    def wait(self, poll_interval: float = 0.02, timeout: float | None = None) -> None:
        """Poll until every queued slice is written (for scripts and tests; the GUI polls from a timer)."""

        def caught_up() -> bool:
            self.poll()
            return not self.pending

        poll_until(caught_up, "live segmentation did not catch up in time", poll_interval, timeout)

    def stop(self) -> None:
        """Stop observing and drop the slices still queued (never waits for the one in progress)."""
        for observer in self._observers:
            self.volume_node.RemoveObserver(observer)
        self._observers = []
        self._stream.close(timeout=0, drop_pending=True)


class AdaptationJob:
    """Improving the model from the user's corrections (training/adapt.py) on a worker thread: the corrected
    stacks are written to a scratch folder first (on the caller's thread, the only one touching MRML); `poll`
    or `wait` follow it, `cancel` stops it writing nothing. Once done, `result` says what was kept."""

    def __init__(self, pairs: list[tuple[Path, Path]], settings, scratch):
        self.pairs, self.settings, self._scratch = pairs, settings, scratch
        self.state, self.error, self.result = "running", "", None
        self.step, self.steps, self.held_out = 0, settings.steps, None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    @property
    def finished(self) -> bool:
        return self.state != "running"

    @property
    def fraction(self) -> float:
        """How far it is, 0-1: by steps, or by the time budget when that runs out first."""
        elapsed = (time.monotonic() - self._started) / (60 * self.settings.minutes)
        return 1.0 if self.state == "done" else min(max(self.step / max(self.steps, 1), elapsed), 1.0)

    def _progress(self, step: int, steps: int, score: float | None) -> None:
        self.step, self.steps = step, steps
        if score is not None:
            self.held_out = score

    def _work(self) -> None:
        from ..training.adapt import AdaptationCancelled, adapt

        try:
            self.result = adapt(self.pairs, self.settings, self._progress, self._cancel)
            self.state = "done"
        except AdaptationCancelled:
            self.state = "cancelled"
        except Exception as exc:  # reported to the panel, never a crash
            self.state, self.error = "failed", str(exc)
        finally:
            self._scratch.cleanup()

    def run(self) -> AdaptationJob:
        self._work()
        return self

    def start(self) -> AdaptationJob:
        self._thread = threading.Thread(target=self._work, name="FetalBrainSeg adapt", daemon=True)
        self._thread.start()
        return self

    def poll(self) -> bool:
        return self.finished

    def wait(self, poll_interval: float = 0.1, timeout: float | None = None) -> AdaptationJob:
        poll_until(self.poll, "adaptation did not finish in time", poll_interval, timeout)
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def text(self) -> str:
        """What the panel shows of it."""
        if self.state == "running":
            score = f", held-out Dice {self.held_out:.3f}" if self.held_out is not None else ""
            return f"Improving from your corrections: step {self.step} of at most {self.steps}{score}"
        if self.state == "done":
            return self.result.summary()
        if self.state == "cancelled":
            return "Cancelled: no site model was written."
        return f"Failed: no site model was written. {self.error}"


class BrainSegmentationLogic:
    """`process` a volume into a segmentation; export masks for annotation and reconstruction."""

    def __init__(self, segmenter_factory: Callable[..., Segmenter] = Segmenter):
        self._segmenter_factory = segmenter_factory
        self._segmenters: dict[tuple[str, str], Segmenter] = {}
        self._last_runs: dict[str, SegmentationJob] = {}  # by segmentation node ID, for undoLastRun
        self._lives: list[LiveSegmentation] = []
        self._watched_scenes: set[int] = set()

    def _stop_on_close(self, scene) -> None:
        """Closing the scene stops this logic's running jobs and live segmentations first."""
        if id(scene) not in self._watched_scenes:
            self._watched_scenes.add(id(scene))
            scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, lambda caller, event: self.stopAll())

    def stopAll(self) -> None:
        """Cancel every running job (its segment is put back) and stop every live segmentation."""
        for job in list(self._last_runs.values()):
            if not job.finished:
                job.cancel_now()
        for live in self._lives:
            live.stop()
        self._lives = []

    def segmenter(
        self, device: str = "auto", precision: str = "fp32", model: str = "", marginMm: float = 0.0
    ) -> Segmenter:
        """Weights are loaded once per device, precision, model (a site model's name; "": the shipped
        weights) and mask margin in mm, and reused across runs."""
        key = (device, precision) + ((model,) if model else ()) + ((marginMm,) if marginMm else ())
        if key not in self._segmenters:
            options = {"weights": resolve_model(model)} if model else {}
            if marginMm:
                options["margin_mm"] = marginMm
            self._segmenters[key] = self._segmenter_factory(device=device, precision=precision, **options)
        return self._segmenters[key]

    @staticmethod
    def siteModels() -> list[str]:
        """The site models made on this machine (fetalbrainseg adapt, or improveFromCorrections)."""
        return [model.name for model in list_site_models()]

    @classmethod
    def modelChoices(cls) -> list[str]:
        """A model list's entries: the shipped weights first, then the site models by name."""
        return [SHIPPED_MODEL_LABEL, *cls.siteModels()]

    @staticmethod
    def modelName(choice: str) -> str:
        """The `model` argument of process for a model list's entry ("" for the shipped weights)."""
        return "" if choice in ("", None, SHIPPED_MODEL_LABEL) else choice

    @staticmethod
    def editedCorrections(scene) -> list[tuple[object, object]]:
        """(volume node, segmentation node) of each stack whose FetalBrainSeg brain segment the user has edited
        since it was written: the corrections a site model can learn from."""
        pairs = []
        for node in scene.GetNodesByClass("vtkMRMLSegmentationNode") if scene else []:
            segment_id = find_brain_segment(node)
            if segment_id is None:
                continue
            segment = node.GetSegmentation().GetSegment(segment_id)
            volume = scene.GetNodeByID(segment_tag(segment, SOURCE_TAG) or "")
            if volume is None or volume.GetImageData() is None:
                continue
            if mask_digest(segment_mask(node, segment_id, volume)) != segment_tag(segment, DIGEST_TAG):
                pairs.append((volume, node))
        return pairs

    def improveFromCorrections(
        self, corrections, name: str, waitForCompletion: bool = True, files=(), **settings
    ) -> AdaptationJob:
        """Learn the site model `name` from (volume node, segmentation node) pairs whose brain segments hold the
        user's corrections (editedCorrections), and from `files`, (image, mask) pairs of corrected stacks
        written earlier (write_correction); nothing of the user's is changed. `settings` are
        training.config.AdaptSettings fields (minutes, steps, device...). Needs PyTorch."""
        import importlib.util
        import tempfile

        if not corrections and not files:
            raise ValueError("no corrected stacks: edit the Brain segment of a segmented stack first")
        check_new_name(name)  # before any work: a site model is never replaced
        if importlib.util.find_spec("torch") is None:
            raise ImportError("learning from corrections needs PyTorch (pip install torch), which is not installed")
        scratch = tempfile.TemporaryDirectory(prefix="fetalbrainseg-corrections-")
        pairs = [write_correction(v, s, Path(scratch.name) / str(i)) for i, (v, s) in enumerate(corrections)]
        job = AdaptationJob(
            pairs + [tuple(map(Path, pair)) for pair in files], AdaptSettings(name=name, **settings), scratch
        )
        return job.run() if waitForCompletion else job.start()

    def process(
        self,
        inputVolume,
        outputSegmentation=None,
        device: str = "auto",
        threshold: float = DEFAULT_THRESHOLD,
        waitForCompletion: bool = True,
        replaceEdits: bool = False,
        onProgress: Callable[[SegmentationJob], None] | None = None,
        precision: str = "fp32",
        model: str = "",
        marginMm: float = 0.0,
    ) -> SegmentationJob:
        """Segment the brain on every slice of `inputVolume` into `outputSegmentation` (new if None).

        With waitForCompletion=False the work runs on a thread and the returned job must be
        polled (`job.poll()` from a timer, or `job.wait()`); MRML changes only in those calls.
        Raises EditedSegmentError if the brain segment was edited since it was written and
        replaceEdits is False; other segments are never touched. precision="int8" runs the
        shipped INT8 model (about 2.7x faster on CPUs, masks within Dice 0.99 of fp32's). `model` names a site
        model (siteModels); "" is the shipped weights. `marginMm` widens the mask in-plane by that many mm.
        """
        check_threshold(threshold)
        segmenter = self.segmenter(device, precision, model, marginMm)
        segmentation, segment_id, previous = self._prepare_segment(inputVolume, outputSegmentation, replaceEdits)
        job = SegmentationJob(segmenter, inputVolume, segmentation, segment_id, previous, onProgress, threshold)
        self._last_runs[segmentation.GetID()] = job
        self._stop_on_close(inputVolume.GetScene())
        return job.run() if waitForCompletion else job.start()

    def canUndoLastRun(self, segmentationNode) -> bool:
        job = self._last_runs.get(segmentationNode.GetID()) if segmentationNode is not None else None
        return job is not None and job.state == "done"

    def undoLastRun(self, segmentationNode, replaceEdits: bool = False) -> None:
        """Put the brain segment of `segmentationNode` back as it was before its last finished run
        (one level). Raises EditedSegmentError if the run's result was edited since, unless replaceEdits."""
        job = self._last_runs.get(segmentationNode.GetID())
        if job is None:
            raise ValueError("no run of this segmentation to undo")
        job.undo(replaceEdits)
        del self._last_runs[segmentationNode.GetID()]

    def startLive(
        self,
        inputVolume,
        outputSegmentation=None,
        device: str = "auto",
        threshold: float = DEFAULT_THRESHOLD,
        replaceEdits: bool = False,
        precision: str = "fp32",
        model: str = "",
        marginMm: float = 0.0,
    ) -> LiveSegmentation:
        """Keep the brain segment current while `inputVolume` changes (OpenIGTLink, a growing sequence)."""
        segmenter = self.segmenter(device, precision, model, marginMm)
        streaming = StreamingSegmenter(segmenter, check_threshold(threshold))
        segmentation, segment_id, _ = self._prepare_segment(inputVolume, outputSegmentation, replaceEdits)
        live = LiveSegmentation(streaming, inputVolume, segmentation, segment_id)
        self._lives.append(live)
        self._stop_on_close(inputVolume.GetScene())
        return live

    def _prepare_segment(self, inputVolume, outputSegmentation, replaceEdits: bool):
        """The segmentation and brain segment to write (created if needed), and the segment's
        current mask; refuses to go on over unconsented edits."""
        volume_from_node(inputVolume)  # fail on unusable input before touching the scene
        scene = inputVolume.GetScene()
        if outputSegmentation is None:
            outputSegmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{inputVolume.GetName()} brain")
            outputSegmentation.CreateDefaultDisplayNodes()
        if outputSegmentation.GetSegmentation().GetNumberOfSegments() == 0:
            outputSegmentation.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
        segment_id = find_brain_segment(outputSegmentation)
        previous = None
        if segment_id is not None:
            previous = segment_mask(outputSegmentation, segment_id, inputVolume)
            segment = outputSegmentation.GetSegmentation().GetSegment(segment_id)
            if mask_digest(previous) != segment_tag(segment, DIGEST_TAG) and not replaceEdits:
                raise EditedSegmentError(
                    f"the '{segment.GetName()}' segment was edited after it was computed; "
                    "re-running would replace those edits"
                )
        outputSegmentation.SetUndoEnabled(True)
        scene.SaveStateForUndo()  # for scenes with undo on; undoLastRun works without it
        if segment_id is None:
            segment_id = outputSegmentation.GetSegmentation().AddEmptySegment("", BRAIN_SEGMENT_NAME, BRAIN_COLOR)
            outputSegmentation.GetSegmentation().GetSegment(segment_id).SetTag(SOURCE_TAG, inputVolume.GetID())
        return outputSegmentation, segment_id, previous

    def exportMask(self, segmentationNode, inputVolume, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """The brain segment as a 0/1 mask on the input's exact voxel grid (NIfTI or NRRD), its header saying
        how it was made (model, margin).

        When the input was loaded from a NIfTI or NRRD file of the same grid, that file's
        header is copied, so reconstruction tools see the stack's own geometry bit for bit.
        """
        path = Path(path)
        if volume_suffix(path) is None:
            raise ValueError(f"{path.name}: choose a .nii.gz, .nii or .nrrd file name")
        segment_id = find_brain_segment(segmentationNode)
        if segment_id is None:
            raise ValueError("this segmentation has no FetalBrainSeg brain segment to export")
        source_file = self._source_file(inputVolume)
        problem = output_problem(path, {source_file.resolve()} if source_file else set(), set(), overwrite)
        if problem:
            raise FileExistsError(problem)
        mask = segment_mask(segmentationNode, segment_id, inputVolume)
        description = segment_tag(segmentationNode.GetSegmentation().GetSegment(segment_id), DESCRIPTION_TAG) or ""
        matrix = ijk_to_ras(inputVolume)
        source, on_source_grid = self._source_grid(source_file, mask, matrix)
        path.parent.mkdir(parents=True, exist_ok=True)
        if source is None:
            write_volume(mask, matrix, path, description)
        elif (source.format == "nrrd") == (volume_suffix(path) == ".nrrd"):
            write_mask(source, on_source_grid, path, description)
        else:
            write_volume(on_source_grid, source.affine, path, description)
        return path

    def exportSegmentation(self, segmentationNode, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """The whole segmentation (every segment, edits included) as .seg.nrrd."""
        path = Path(path)
        if not path.name.lower().endswith(".seg.nrrd"):
            # the storage node would write NRRD bytes under any other name
            raise ValueError(f"{path.name}: a segmentation is saved as .seg.nrrd")
        problem = output_problem(path, set(), set(), overwrite)
        if problem:
            raise FileExistsError(problem)
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(path))
        if not storage.WriteData(segmentationNode):
            raise OSError(f"could not write {path}")
        return path

    @staticmethod
    def _source_file(volume_node) -> Path | None:
        storage = volume_node.GetStorageNode()
        name = storage.GetFileName() if storage is not None else None
        return Path(name) if name and os.path.isfile(name) else None

    @staticmethod
    def _source_grid(source_file: Path | None, mask: np.ndarray, matrix: np.ndarray):
        """The file the volume was loaded from and the mask on its voxel grid, when the node
        still holds that file's voxels (Slicer may have flipped an axis; not moved since)."""
        if source_file is None or volume_suffix(source_file) is None:
            return None, None
        try:
            source = read_volume(source_file)
        except VolumeError:
            return None, None
        reordered = reorder_to_grid(mask, matrix, source.affine, source.data.shape)
        return (source, reordered) if reordered is not None else (None, None)
