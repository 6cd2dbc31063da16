"""The Python API: a `Segmenter` loads weights once and segments stacks or single slices.

`iter_chunks` is the one code path: it yields each chunk of slices' probabilities on the
stack's own voxel grid as soon as it is computed, so a caller can show progress, draw
masks live or stop early (cancel) by simply not asking for the next chunk. With head-size
adaptation (zoom.py, the default) a stack whose head the first pass finds small or large is
segmented a second time at another magnification: its chunks follow (`pass_number` 2, from
slice 0 again) and replace the first pass's slices. Then one last chunk, `choice`, holds every
slice's probabilities from the pass the engine keeps (the second, unless bitten: zoom.py), so a caller that
writes each chunk where it belongs ends with the kept pass. `segment` drives it for whole
stacks; `segment_slice` serves slices arriving one at a time (at a fixed zoom: adapting needs the
whole stack).

The network runs on a backend (PyTorch, or ONNX Runtime without PyTorch; see backends.py),
imported when a Segmenter is made, so the Slicer module loads on a Slicer without either.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..settings import setting
from .backends import BACKENDS
from .postprocess import POSTPROCESSING, add_margin, postprocess
from .review import SliceReview, mask_disagreement, review_slices
from .site_models import modality_of, site_record
from .stack import InPlaneOrder, Stack, acquired_centres
from .stack import intensity_scale as acquired_std
from .volume_io import Volume, read_volume
from .zoom import head_zoom, second_pass_bitten

DEFAULT_THRESHOLD = 0.5  # brain probability; chosen on validation stacks (docs/results/validation_choices.md)
ZOOM_LIMITS = (0.25, 4.0)  # a fixed magnification beyond these is a mistake, not a head size


def check_threshold(threshold: float) -> float:
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must lie strictly between 0 and 1")
    return float(threshold)


def check_zoom(zoom: str | float) -> str | float:
    """ "auto" (head-size adaptation), or a fixed magnification between ZOOM_LIMITS."""
    if zoom == "auto":
        return zoom
    try:
        value = float(zoom)
    except (TypeError, ValueError):
        raise ValueError(f'zoom must be "auto" or a number, not {zoom!r}') from None
    if not ZOOM_LIMITS[0] <= value <= ZOOM_LIMITS[1]:
        raise ValueError(f"zoom must lie between {ZOOM_LIMITS[0]:g} and {ZOOM_LIMITS[1]:g}, not {value:g}")
    return value


@dataclass(frozen=True)
class SegmenterOptions:
    """How a Segmenter segments, declared once: its defaults, and the command line's options (cli/common.py).
    Where slices come one by one, the whole-stack options take SLICE_BY_SLICE_VALUES."""

    device: str = setting("auto", "auto (CUDA when present), cpu or cuda (default: %(default)s)")
    batch_size: int = setting(8, "slices per forward pass (default: %(default)s)")
    threshold: float = setting(DEFAULT_THRESHOLD, "brain probability threshold (default: %(default)s)")
    backend: str = setting(
        "auto",
        "runtime: auto picks the fastest installed (torch on a GPU, else openvino, else onnxruntime) "
        "(default: %(default)s)",
        choices=BACKENDS,
    )
    precision: str = setting(
        "fp32",
        "bf16: faster with --backend openvino on CPUs with native bf16; int8: the shipped INT8 model with "
        "onnxruntime or openvino, fastest on CPUs; both give slightly different masks (default: %(default)s)",
        choices=("fp32", "bf16", "int8"),
    )
    postprocess: str = setting(
        POSTPROCESSING[0],
        "blocks3d (default): the largest connected brain component in 3D, and blocks of other slices that motion "
        "or a slice without brain found split off it (chosen on validation and train stacks); largest3d: that "
        "component alone; largest2d: the largest on each slice; none",
        choices=POSTPROCESSING,
    )
    tta: bool = setting(
        False, "flip averaging: the slice and its two flips, 3x the time; adds flip disagreement to the review flag"
    )
    zoom: str | float = setting(
        "auto",
        "magnification of the head on the network grid; auto (whole stacks): a second pass magnifies a head the "
        "first finds small, or shrinks a large one; 1: none (default: %(default)s)",
        metavar="auto|FACTOR",
    )
    any_modality: bool = setting(
        False,
        "with a site model: use it on stacks of every modality; by default a stack of a modality it did not learn "
        "(T2W or EPI, by the pixel size) is segmented with its base weights",
    )
    margin_mm: float = setting(
        0.0,
        "grow each slice's mask by this distance in-plane, for pipelines that want a looser mask; recorded in the "
        "mask's header (default: %(default)s)",
        metavar="MM",
    )

    def check_values(self) -> None:
        """Raise ValueError for a value no Segmenter takes, the runtime's choice aside."""
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        check_threshold(self.threshold)
        if self.postprocess not in POSTPROCESSING:
            raise ValueError(f"post-processing must be one of {', '.join(POSTPROCESSING)}")
        check_zoom(self.zoom)
        if self.margin_mm < 0:
            raise ValueError(f"the margin must be 0 mm or more, not {self.margin_mm:g}")

    def check(self, weights: str | os.PathLike | None = None) -> None:
        """Raise what a Segmenter of these options and weights would, without loading the model: a parent whose
        workers each load their own checks here (an INT8 model is built now, once, not in every worker)."""
        from .backends import backend_files

        self.check_values()
        backend_files(self.backend, weights, self.device, self.precision)


SLICE_BY_SLICE_VALUES = {"batch_size": 1, "postprocess": "none"}  # the whole-stack options, slice by slice


class SegmentationCancelled(Exception):
    """Raised by `Segmenter.segment` when its cancel event is set; nothing is returned."""


@dataclass
class Chunk:
    start: int  # first slice index of the chunk
    stop: int  # one past the last
    total: int  # slices in the stack
    probabilities: np.ndarray  # (stop - start, A, B) float32 on the slice grid
    disagreement: np.ndarray | None = None  # per slice, with flip averaging: 1 - Dice of the flipped masks
    zoom: float = 1.0  # the magnification this chunk was computed at; a second pass's chunks replace the first's
    pass_number: int = 1  # 1, or 2 for head-size adaptation's second pass, which starts at slice 0 again
    # the last chunk after two passes: nothing computed, every slice of the pass kept (its zoom and number)
    choice: bool = False
    pass_disagreement: np.ndarray | None = None  # on the choice chunk: per slice, 1 - Dice of the passes' masks


@dataclass
class SegmentationResult:
    probabilities: np.ndarray  # float32 in [0, 1], the input volume's voxel grid
    mask: np.ndarray  # uint8 0/1, the input volume's voxel grid
    slice_axis: int
    seconds: float
    review: list[SliceReview]  # one per slice: area, confidence, review flag and its reasons
    disagreement: np.ndarray | None = None  # per slice, with flip averaging (see Chunk)
    zoom: float = 1.0  # the magnification of the pass that made the mask
    pass_disagreement: np.ndarray | None = None  # per slice, when two passes ran (see Chunk)
    # a site model's base weights segmented this stack, of a modality the site model did not learn
    base_instead: str = ""

    @property
    def num_slices(self) -> int:
        return self.mask.shape[self.slice_axis]


class Segmenter:
    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str = SegmenterOptions.device,
        batch_size: int = SegmenterOptions.batch_size,
        threshold: float = SegmenterOptions.threshold,
        backend: str = SegmenterOptions.backend,
        precision: str = SegmenterOptions.precision,
        postprocess: str = SegmenterOptions.postprocess,
        tta: bool = SegmenterOptions.tta,
        zoom: str | float = SegmenterOptions.zoom,
        any_modality: bool = SegmenterOptions.any_modality,
        margin_mm: float = SegmenterOptions.margin_mm,
    ):
        """`weights` may be a site model (site_models.py): a stack of a modality it did not learn is then
        segmented with its base weights, unless `any_modality`."""
        self.options = SegmenterOptions(
            device, batch_size, threshold, backend, precision, postprocess, tta, zoom, any_modality, margin_mm
        )
        self.options.check_values()
        from .backends import create_backend

        # a name, or a backend object (training validates its model in memory through a TorchBackend)
        self.backend = create_backend(backend, weights, device, precision) if isinstance(backend, str) else backend
        self.device = self.backend.device
        self.metadata = self.backend.metadata
        self.pixel_size = float(self.metadata["preprocessing"]["pixel_size_mm"])
        self.batch_size = batch_size
        self.threshold = float(threshold)
        self.postprocess = postprocess
        self.tta = tta
        self.zoom = check_zoom(zoom)
        self.margin_mm = float(margin_mm)
        self.site = site_record(self.metadata)
        self.any_modality = any_modality
        self._base: Segmenter | None = None

    def for_stack(self, stack: Stack) -> Segmenter:
        """The segmenter for this stack: this one, or for a site model given a stack of a modality it did not
        learn (by the stack's pixel size), one with the site model's base weights."""
        if self.site is None or self.any_modality or modality_of(min(stack.spacing)) in self.site["modality"]:
            return self
        if self._base is None:
            self._base = Segmenter(self.site["base"], **asdict(self.options))
        return self._base

    @property
    def first_zoom(self) -> float:
        """The zoom of the first pass, and of single slices: 1 under "auto", which adapts from there."""
        return 1.0 if self.zoom == "auto" else self.zoom

    def stack(self, volume: Volume, name: str = "input") -> Stack:
        """The checked stack for this volume (raises VolumeError with a one-line reason)."""
        return Stack(volume, name, self.pixel_size)

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities of (n, H, W) network-grid slices; with `tta`, the mean over the slices and their
        left-right and up-down flips, and each slice's flip disagreement."""
        probs = self.backend.predict(images)
        if not self.tta:
            return probs, None
        variants = [np.flip(self.backend.predict(np.ascontiguousarray(np.flip(images, axis))), axis) for axis in (1, 2)]
        disagreement = mask_disagreement(probs >= self.threshold, [v >= self.threshold for v in variants])
        return (probs + variants[0] + variants[1]) / 3, disagreement

    def iter_chunks(self, stack: Stack, threshold: float | None = None) -> Iterator[Chunk]:
        """Each chunk's probabilities as computed; with zoom "auto", then the second pass's, if any (decided
        on the first pass's mask at `threshold`, by default the segmenter's), and the choice between them."""
        if self.for_stack(stack) is not self:
            yield from self.for_stack(stack).iter_chunks(stack, threshold)
            return
        first = ChunkedProbabilities(stack.slices().shape, self.tta)
        for chunk in self._pass(stack, self.first_zoom, 1):
            first.add(chunk)
            yield chunk
        if self.zoom != "auto":
            return
        first_mask = np.moveaxis(self.final_mask(stack, first.probabilities, threshold), stack.axis, 0)
        zoom = head_zoom(first_mask, stack.pixel_area)
        if zoom == 1.0:
            return
        second = ChunkedProbabilities(stack.slices().shape, self.tta)
        for chunk in self._pass(stack, zoom, 2):
            second.add(chunk)
            yield chunk
        second_mask = np.moveaxis(self.final_mask(stack, second.probabilities, threshold), stack.axis, 0)
        bitten = second_pass_bitten((first.probabilities, first_mask), (second.probabilities, second_mask))
        kept = first if bitten else second
        total = stack.num_slices
        yield Chunk(
            0,
            total,
            total,
            kept.probabilities,
            kept.disagreement,
            kept.zoom,
            kept.number,
            choice=True,
            pass_disagreement=mask_disagreement(first_mask, [second_mask]),
        )

    def _pass(self, stack: Stack, zoom: float, number: int) -> Iterator[Chunk]:
        seen = stack if zoom == 1.0 else Stack(stack.volume, stack.name, self.pixel_size / zoom)
        total = stack.num_slices
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            probs, disagreement = self.predict(seen.network_input(slice(start, stop)))
            yield Chunk(start, stop, total, seen.from_network(probs, slice(start, stop)), disagreement, zoom, number)

    def final_mask(self, stack: Stack, probabilities: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """The binarized, post-processed mask on the volume grid, from (n, A, B) slice-first probabilities, grown
        by the margin, if any."""
        mask = postprocess(self.binarize(stack.assemble(probabilities), threshold), stack.axis, self.postprocess)
        return add_margin(mask, stack.axis, stack.volume.spacing, self.margin_mm)

    def mask_description(self) -> str:
        """How this segmenter's masks were made, for their file header."""
        margin = f", margin {self.margin_mm:g} mm" if self.margin_mm else ""
        site = f", site model {self.site['name']}" if self.site else ""
        return f"FetalBrainSeg brain mask{margin}{site}"

    def finish(
        self,
        stack: Stack,
        probabilities: np.ndarray,
        disagreement: np.ndarray | None = None,
        threshold: float | None = None,
        pass_disagreement: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[SliceReview]]:
        """A whole stack's mask (binarized, post-processed, on the volume grid) and its slice reviews,
        from (n, A, B) slice-first probabilities; `threshold` overrides the segmenter's for this call."""
        mask = self.final_mask(stack, probabilities, threshold)
        review = review_slices(
            probabilities,
            np.moveaxis(mask, stack.axis, 0),
            stack.pixel_area,
            disagreement,
            pass_disagreement=pass_disagreement,
        )
        return mask, review

    def segment(
        self,
        volume: Volume,
        name: str = "input",
        on_chunk: Callable[[Chunk], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> SegmentationResult:
        """Segment every slice of a stack; `on_chunk` sees each chunk as it completes."""
        begin = time.perf_counter()
        stack = self.stack(volume, name)
        used = self.for_stack(stack)
        latest = ChunkedProbabilities(stack.slices().shape, self.tta)
        for chunk in self.iter_chunks(stack):
            if cancel is not None and cancel.is_set():
                raise SegmentationCancelled(f"{name}: cancelled after {chunk.start} of {chunk.total} slices")
            latest.add(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
        mask, review = used.finish(
            stack, latest.probabilities, latest.disagreement, pass_disagreement=latest.pass_disagreement
        )
        return SegmentationResult(
            stack.assemble(latest.probabilities),
            mask,
            stack.axis,
            time.perf_counter() - begin,
            review,
            latest.disagreement,
            latest.zoom,
            latest.pass_disagreement,
            ""
            if used is self
            else f"{name} looks {modality_of(min(stack.spacing))} and the site model learnt {self.site['modality']}: "
            "segmented with its base weights",
        )

    def segment_file(self, path: str | os.PathLike, **options) -> tuple[Volume, SegmentationResult]:
        volume = read_volume(path)
        return volume, self.segment(volume, os.path.basename(os.fspath(path)), **options)

    def segment_slice(
        self,
        image: np.ndarray,
        spacing: tuple[float, float],
        intensity_scale: float | None = None,
        threshold: float | None = None,
        directions: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One 2D slice as it arrives: (probabilities, mask) on the slice's own grid.

        `intensity_scale` is the stack's intensity standard deviation when known (pass
        the same value for every slice of a series); by default, the slice's own.
        `directions`, the (3, 2) world directions of the slice's two axes, show it to the network
        as a whole stack's slice is (stack.InPlaneOrder); without them, as stored.
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"a slice must be a 2D array, not shape {image.shape}")
        if not np.isfinite(image).all():
            raise ValueError("the slice contains NaN or infinite intensities")
        scale = float(intensity_scale) if intensity_scale else acquired_std(image)
        if scale <= 0:
            return np.zeros_like(image), np.zeros(image.shape, np.uint8)
        order = InPlaneOrder() if directions is None else InPlaneOrder.from_directions(directions)
        shown = order.shown(image[None])
        grid = order.grid(image.shape, spacing, self.pixel_size / self.first_zoom)
        centre = acquired_centres(shown)
        probs, _ = self.predict(grid.to_network(shown, centre) / np.float32(scale))
        probabilities = np.ascontiguousarray(order.stored(grid.from_network(probs, centre))[0])
        mask = add_margin(self.binarize(probabilities, threshold)[None], 0, (1.0, *spacing), self.margin_mm)[0]
        return probabilities, mask

    def binarize(self, probabilities: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """The mask at `threshold`, by default the segmenter's (callers sharing a segmenter pass their own)."""
        return (probabilities >= (self.threshold if threshold is None else threshold)).astype(np.uint8)


class ChunkedProbabilities:
    """What a caller of `iter_chunks` keeps: each slice's latest probabilities (and flip disagreement) from
    the chunks added so far, the pass they came from, and the passes' disagreement once a choice came."""

    def __init__(self, shape: tuple[int, ...], tta: bool):
        self.probabilities = np.zeros(shape, dtype=np.float32)
        self.disagreement = np.zeros(shape[0]) if tta else None
        self.pass_disagreement = None
        self.zoom, self.number = 1.0, 1

    def add(self, chunk: Chunk) -> None:
        self.probabilities[chunk.start : chunk.stop] = chunk.probabilities
        if chunk.disagreement is not None:
            self.disagreement[chunk.start : chunk.stop] = chunk.disagreement
        if chunk.pass_disagreement is not None:
            self.pass_disagreement = chunk.pass_disagreement
        self.zoom, self.number = chunk.zoom, chunk.pass_number
