"""Streaming slices: a simulated scanner feeds real slices at a fixed rate from its own thread."""

import threading
import time

import numpy as np
from conftest import dice

from FetalBrainSegLib.engine.streaming import SliceStream, StreamingSegmenter
from FetalBrainSegLib.engine.volume_io import read_volume


def slice_matrix(affine: np.ndarray, k: int) -> np.ndarray:
    """The 4x4 of slice k: pixel (i, j) at k = 0 -> RAS, as a scanner sends with each slice."""
    matrix = affine.copy()
    matrix[:3, 3] = affine[:3, :3] @ [0, 0, k] + affine[:3, 3]
    return matrix


def test_a_scanner_feed_is_answered_in_order_with_scanner_coordinates(segmenter, manifest):
    record = next(r for r in manifest if r.name == "e2mip_testing_0001")  # oblique T2W, 30 slices
    volume = read_volume(record.image)
    reference = segmenter.segment(volume).mask
    results, answered = [], threading.Event()

    def on_result(result):
        results.append(result)
        if len(results) == volume.data.shape[2]:
            answered.set()

    stream = SliceStream(StreamingSegmenter(segmenter), on_result)

    def scanner(period=0.02):
        for k in range(volume.data.shape[2]):
            stream.submit(volume.data[:, :, k], slice_matrix(volume.affine, k))
            time.sleep(period)

    feeder = threading.Thread(target=scanner)
    feeder.start()
    feeder.join()
    assert answered.wait(timeout=300)
    stream.close()
    assert stream.error is None
    assert [r.index for r in results] == list(range(30))  # in order, none dropped
    assert all(r.latency_s > 0 for r in results)

    brain_slices = [k for k in range(30) if reference[:, :, k].any()]
    assert len(brain_slices) > 15
    overlaps = [dice(results[k].mask, reference[:, :, k]) for k in brain_slices]
    assert np.median(overlaps) > 0.95  # running series statistics vs the whole stack's
    for k in brain_slices:
        r = results[k]
        if r.centroid_ras is None:
            continue
        pixels = np.argwhere(r.mask > 0).mean(axis=0)  # the answer's own mask, through the stack's affine
        expected = (volume.affine @ np.array([pixels[0], pixels[1], k, 1.0]))[:3]
        np.testing.assert_allclose(r.centroid_ras, expected, atol=1e-6)
        low, high = r.bbox_ras
        assert np.all(low <= r.centroid_ras) and np.all(r.centroid_ras <= high)
    empty = [k for k in range(30) if not results[k].mask.any()]
    assert all(results[k].centroid_ras is None and results[k].bbox_ras is None for k in empty)


def test_a_margin_widens_each_streamed_slice_as_it_widens_a_stack(manifest):
    """`--margin-mm` in stream and Live mode: the slice answer is grown in-plane on the slice's own grid, exactly
    as the whole-stack mask is grown (postprocess.add_margin on that slice)."""
    from FetalBrainSegLib.engine.inference import Segmenter
    from FetalBrainSegLib.engine.postprocess import add_margin

    record = next(r for r in manifest if r.name == "e2mip_testing_0000")
    volume = read_volume(record.image)
    plain, wide = Segmenter(device="cpu", zoom=1), Segmenter(device="cpu", zoom=1, margin_mm=2.5)
    spacing = tuple(volume.spacing[:2])
    for k in range(volume.data.shape[2]):
        image = volume.data[:, :, k]
        _, mask = plain.segment_slice(image, spacing)
        _, grown = wide.segment_slice(image, spacing)
        assert np.array_equal(grown, add_margin(mask[None], 0, (1.0, *spacing), 2.5)[0])
        assert grown.sum() > mask.sum() or not mask.any()
