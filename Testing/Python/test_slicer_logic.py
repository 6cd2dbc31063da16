"""The MRML glue headless, with Kitware's slicer-core wheel: a real vtkMRMLScene, volume nodes
loaded from real shared stacks, segmentation nodes written by the logic."""

import threading

import numpy as np
import pytest
import slicer  # the slicer-core wheel, a test dependency: a missing one fails here, never skips
from conftest import dice, load_pair

from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.stack import Stack, reorder_to_grid
from FetalBrainSegLib.engine.volume_io import Volume, read_volume
from FetalBrainSegLib.slicer.job_messages import progress_text
from FetalBrainSegLib.slicer.logic import (
    DIGEST_TAG,
    BrainSegmentationLogic,
    EditedSegmentError,
    find_brain_segment,
    ijk_to_ras,
    mask_digest,
    segment_mask,
    segment_tag,
    slice_center_ras,
    volume_from_node,
)

pytestmark = pytest.mark.usefixtures("network_answers_reused")  # conftest.py NetworkAnswers


def on_file_grid(node_array_ijk, node, path):
    """A node-grid array on the file's grid: Slicer flips left-handed stacks (this one is)."""
    source = read_volume(path)
    reordered = reorder_to_grid(node_array_ijk, ijk_to_ras(node), source.affine, source.data.shape)
    assert reordered is not None, "the node and the file should hold the same voxels"
    return reordered


class HeadlessSlicer:
    """A scene wired like desktop Slicer's: application logic and the module logics we use."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.app = slicer.vtkSlicerApplicationLogic()
        self.app.SetMRMLScene(self.scene)
        self.logics = {}
        for name, cls in (
            ("Colors", slicer.vtkMRMLColorLogic),
            ("Volumes", slicer.vtkSlicerVolumesLogic),
            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ):
            logic = cls()
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.app)
            self.app.SetModuleLogic(name, logic)
            self.logics[name] = logic  # keep references: collected logics detach color nodes
        self.logics["Colors"].AddDefaultColorNodes()

    def load(self, path, name="stack"):
        return self.logics["Volumes"].AddArchetypeVolume(str(path), name)

    def export_labelmap(self, segmentation):
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportAllSegmentsToLabelmapNode(
            segmentation, labelmap, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        )
        return labelmap


@pytest.fixture
def headless():
    return HeadlessSlicer()


@pytest.fixture(scope="module")
def logic(segmenter):
    return BrainSegmentationLogic(segmenter_factory=lambda device, precision: segmenter)


@pytest.fixture(scope="module")
def engine_mask(segmenter, t2w_test_record):
    return segmenter.segment(read_volume(t2w_test_record.image)).mask


def edit(segmentation, segment_id, volume_node, mask):
    """What a Segment Editor stroke does in the end: replace the segment's labelmap."""
    from FetalBrainSegLib.slicer.logic import _oriented_image

    image = _oriented_image(mask.shape, ijk_to_ras(volume_node), mask)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(image, segmentation, segment_id, 0)


def test_the_exported_labelmap_is_the_engines_mask_on_the_input_geometry(headless, logic, engine_mask, t2w_test_record):
    volume = headless.load(t2w_test_record.image)
    job = logic.process(volume, None, device="cpu")
    assert job.state == "done" and job.done_slices == job.total == 12
    labelmap = headless.export_labelmap(job.segmentation_node)
    np.testing.assert_allclose(ijk_to_ras(labelmap), ijk_to_ras(volume), atol=1e-6)
    exported = slicer.util.arrayFromVolume(labelmap).transpose(2, 1, 0)
    np.testing.assert_array_equal(on_file_grid(exported, volume, t2w_test_record.image), engine_mask)
    assert dice(engine_mask, load_pair(t2w_test_record)[1]) > 0.6  # the brain is found (a sanity floor)
    assert len(job.statistics) == 12 and [s.index for s in job.statistics] == list(range(12))
    areas = np.array([s.area_mm2 for s in job.statistics])
    np.testing.assert_allclose(areas, job.mask.sum(axis=(0, 1)) * 1.0, rtol=1e-6)  # 1 x 1 mm pixels
    np.testing.assert_allclose(sorted(areas), sorted(engine_mask.sum(axis=(0, 1))), rtol=1e-9)


FIXED_ZOOM = 1.25


def test_int8_is_asked_for_per_run_and_its_segmenter_is_kept_apart(headless, t2w_test_record):
    # each (device, precision) loads its own model; at a fixed zoom, this stack's second-pass one (where the
    # floor below was measured), as the engine's choice between two zoom passes is a close call on this
    # stack, which INT8's rounding may tip (not what is tested here)
    logic = BrainSegmentationLogic(lambda **options: Segmenter(zoom=FIXED_ZOOM, **options))
    volume = headless.load(t2w_test_record.image)
    job = logic.process(volume, None, device="cpu", precision="int8")
    assert job.state == "done" and logic.segmenter("cpu", "int8").backend.precision == "int8"
    exported = slicer.util.arrayFromVolume(headless.export_labelmap(job.segmentation_node)).transpose(2, 1, 0)
    # the engine's INT8 mask of the voxels as the node holds them (Slicer flips this left-handed stack, and
    # INT8 is not exactly mirror-symmetric, unlike fp32 here)
    node_voxels = volume_from_node(volume)
    engine_int8 = Segmenter(device="cpu", precision="int8", zoom=FIXED_ZOOM).segment(
        Volume(np.array(node_voxels.data), node_voxels.affine)
    )
    assert np.array_equal(exported, engine_int8.mask)
    int8_mask = on_file_grid(exported, volume, t2w_test_record.image)
    fp32_mask = Segmenter(device="cpu", zoom=FIXED_ZOOM).segment(read_volume(t2w_test_record.image)).mask
    assert 0.98 < dice(int8_mask, fp32_mask) < 1  # close to fp32's, not the same
    assert logic.segmenter("cpu").backend.precision == "fp32"


def test_existing_segments_survive_reruns_and_edits_are_not_replaced_without_consent(
    headless, logic, engine_mask, t2w_test_record
):
    volume = headless.load(t2w_test_record.image)
    segmentation = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "manual")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    placenta_id = segmentation.GetSegmentation().AddEmptySegment("", "Placenta")
    placenta = np.zeros(engine_mask.shape, np.uint8)
    placenta[10:60, 20:40, 2:5] = 1
    edit(segmentation, placenta_id, volume, placenta)

    logic.process(volume, segmentation, device="cpu")
    brain_id = find_brain_segment(segmentation)
    logic.process(volume, segmentation, device="cpu")  # an unedited result may be recomputed freely
    assert find_brain_segment(segmentation) == brain_id
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2
    np.testing.assert_array_equal(segment_mask(segmentation, placenta_id, volume), placenta)

    corrected = segment_mask(segmentation, brain_id, volume)
    corrected[:5, :5, 0] = 1  # a stroke in a corner, where there is certainly no brain
    edit(segmentation, brain_id, volume, corrected)
    with pytest.raises(EditedSegmentError, match="edited"):
        logic.process(volume, segmentation, device="cpu")
    np.testing.assert_array_equal(segment_mask(segmentation, brain_id, volume), corrected)

    logic.process(volume, segmentation, device="cpu", replaceEdits=True)
    np.testing.assert_array_equal(
        on_file_grid(segment_mask(segmentation, brain_id, volume), volume, t2w_test_record.image), engine_mask
    )
    np.testing.assert_array_equal(segment_mask(segmentation, placenta_id, volume), placenta)


def test_background_runs_show_masks_chunk_by_chunk(headless, logic, engine_mask, t2w_test_record, segmenter):
    volume = headless.load(t2w_test_record.image)
    seen = []

    texts = []

    def progress(job):
        brain = segment_mask(job.segmentation_node, job.segment_id, volume)
        seen.append((job.done_slices, int(brain[..., job.done_slices :].sum()), job.zoom))
        texts.append(progress_text(job))

    segmenter.batch_size = 5
    try:
        job = logic.process(volume, None, device="cpu", waitForCompletion=False, onProgress=progress).wait(timeout=120)
    finally:
        segmenter.batch_size = 8
    assert job.state == "done"
    second_zoom = seen[3][2]
    assert second_zoom > 1  # a small head for the network: a second pass, magnified, redraws every slice (zoom.py)
    # three chunks a pass, the choice between the passes (nothing computed), then the end
    assert [done for done, _, _ in seen] == [5, 10, 12] * 2 + [12, 12]
    assert all(beyond == 0 for _, beyond, _ in seen[:3])  # the first pass draws nothing past the slices it has
    assert texts[0].startswith("5 / 12 slices") and texts[3].startswith(f"Second pass, zoom {second_zoom:.2f}: 5 / 12")
    np.testing.assert_array_equal(
        on_file_grid(segment_mask(job.segmentation_node, job.segment_id, volume), volume, t2w_test_record.image),
        engine_mask,
    )


def test_a_cancelled_run_leaves_the_scene_as_it_was(headless, logic, engine_mask, t2w_test_record):
    volume = headless.load(t2w_test_record.image)
    first = logic.process(volume, None, device="cpu")
    segmentation, brain_id = first.segmentation_node, first.segment_id

    job = logic.process(
        volume, segmentation, device="cpu", waitForCompletion=False, onProgress=lambda job: job.cancel()
    )
    job.wait(timeout=120)
    assert job.state == "cancelled"
    np.testing.assert_array_equal(
        on_file_grid(segment_mask(segmentation, brain_id, volume), volume, t2w_test_record.image), engine_mask
    )
    assert logic.process(volume, segmentation, device="cpu").state == "done"  # the digest still matches

    fresh = logic.process(volume, None, device="cpu", waitForCompletion=False, onProgress=lambda job: job.cancel())
    fresh.wait(timeout=120)
    assert fresh.state == "cancelled" and fresh.segmentation_node.GetSegmentation().GetNumberOfSegments() == 0


def test_undo_brings_back_the_users_edits(headless, logic, engine_mask, t2w_test_record):
    headless.scene.SetUndoOn()
    volume = headless.load(t2w_test_record.image)
    job = logic.process(volume, None, device="cpu")
    corrected = segment_mask(job.segmentation_node, job.segment_id, volume)
    corrected[:5, :5, 5] = 1  # a stroke in a corner, where there is certainly no brain
    edit(job.segmentation_node, job.segment_id, volume, corrected)
    logic.process(volume, job.segmentation_node, device="cpu", replaceEdits=True)
    np.testing.assert_array_equal(
        on_file_grid(segment_mask(job.segmentation_node, job.segment_id, volume), volume, t2w_test_record.image),
        engine_mask,
    )
    headless.scene.Undo()
    np.testing.assert_array_equal(segment_mask(job.segmentation_node, job.segment_id, volume), corrected)


def test_exports_for_reconstruction_and_annotation(headless, logic, engine_mask, t2w_test_record, tmp_path):
    volume = headless.load(t2w_test_record.image)
    job = logic.process(volume, None, device="cpu")
    source = read_volume(t2w_test_record.image)

    path = logic.exportMask(job.segmentation_node, volume, tmp_path / "mask.nii.gz")
    written = read_volume(path)
    np.testing.assert_array_equal(written.data, engine_mask)
    assert written.header.binaryblock[40:56] == source.header.binaryblock[40:56]  # dims
    np.testing.assert_array_equal(written.affine, source.affine)  # the stack's own header, bit for bit
    with pytest.raises(FileExistsError, match="already exists"):
        logic.exportMask(job.segmentation_node, volume, path)
    with pytest.raises(FileExistsError, match="never overwritten"):
        logic.exportMask(job.segmentation_node, volume, t2w_test_record.image, overwrite=True)

    nrrd = read_volume(logic.exportMask(job.segmentation_node, volume, tmp_path / "mask.nrrd"))
    np.testing.assert_array_equal(nrrd.data, engine_mask)
    np.testing.assert_allclose(nrrd.affine, source.affine, atol=1e-5)

    seg_path = logic.exportSegmentation(job.segmentation_node, tmp_path / "brain.seg.nrrd")
    with pytest.raises(ValueError, match=".seg.nrrd"):
        logic.exportSegmentation(job.segmentation_node, tmp_path / "brain.nii.gz")
    loaded = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(seg_path))
    assert storage.ReadData(loaded)
    segment_id = find_brain_segment(loaded)
    assert segment_tag(loaded.GetSegmentation().GetSegment(segment_id), DIGEST_TAG)
    np.testing.assert_array_equal(
        on_file_grid(segment_mask(loaded, segment_id, volume), volume, t2w_test_record.image), engine_mask
    )


def test_slice_centres_follow_the_slice_axis(headless, t2w_test_record):
    volume = headless.load(t2w_test_record.image)
    first, last = np.array(slice_center_ras(volume, 2, 0)), np.array(slice_center_ras(volume, 2, 11))
    assert np.linalg.norm(last - first) == pytest.approx(11 * 3.5, rel=1e-4)  # 3.5 mm slice spacing


def test_unusable_volumes_are_refused_before_the_scene_changes(headless, logic):
    empty = headless.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    count = headless.scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="no image data"):
        logic.process(empty, None, device="cpu")
    assert headless.scene.GetNumberOfNodes() == count


def test_live_mode_segments_each_slice_as_it_arrives(headless, logic, t2w_test_record):
    """A growing stack, as OpenIGTLink or a sequence fills it: each new slice is segmented on arrival."""
    source = headless.load(t2w_test_record.image)
    data = slicer.util.arrayFromVolume(source).copy()  # (K, J, I)
    incoming = headless.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "incoming")
    slicer.util.updateVolumeFromArray(incoming, np.zeros_like(data))
    incoming.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras(source)))

    session = logic.startLive(incoming, None, device="cpu")
    assert session.results == {}
    for k in range(len(data)):
        slicer.util.arrayFromVolume(incoming)[k] = data[k]
        slicer.util.arrayFromVolumeModified(incoming)  # what a receiver does: the observer fires
        session.wait(timeout=60)  # the panel's timer polls the worker's answers
        assert sorted(session.results) == list(range(k + 1))
    live = segment_mask(session.segmentation_node, session.segment_id, incoming)
    session.stop()
    slicer.util.arrayFromVolume(incoming)[0] = 0
    slicer.util.arrayFromVolumeModified(incoming)
    session.poll()
    assert 0 in session.results and session.results[0].mask.any()  # stopped: no longer updated

    batch = logic.process(source, None, device="cpu")
    reference = segment_mask(batch.segmentation_node, batch.segment_id, source)
    brain = [k for k in range(reference.shape[2]) if reference[:, :, k].any()]
    assert np.median([dice(live[:, :, k], reference[:, :, k]) for k in brain]) > 0.9
    # a later batch run over the live result is not mistaken for replacing a user's edits
    assert logic.process(incoming, session.segmentation_node, device="cpu").state == "done"


@pytest.mark.network_called_for_real  # the two jobs must overlap, as long as a real run takes
def test_a_jobs_threshold_is_its_own_even_when_another_job_starts_meanwhile(
    headless, logic, segmenter, t2w_test_record
):
    """The segmenter is shared per device and precision: a second job's threshold must not leak into the first."""
    node = headless.load(t2w_test_record.image)
    low = logic.process(node, None, device="cpu", threshold=0.2, waitForCompletion=False)
    high = logic.process(
        headless.load(t2w_test_record.image, "again"), None, device="cpu", threshold=0.8, waitForCompletion=False
    )
    low.wait(timeout=300)
    high.wait(timeout=300)
    assert segmenter.threshold == 0.5  # untouched
    volume = read_volume(t2w_test_record.image)
    for job, threshold in ((low, 0.2), (high, 0.8)):
        expected = Segmenter(device="cpu", threshold=threshold).segment(volume).mask
        got = on_file_grid(
            segment_mask(job.segmentation_node, job.segment_id, job.volume_node), job.volume_node, t2w_test_record.image
        )
        assert np.array_equal(got, expected), threshold
    assert low.statistics[0].area_mm2 >= high.statistics[0].area_mm2


def test_undo_last_run_brings_back_the_users_edits_with_scene_undo_off(headless, logic, engine_mask, t2w_test_record):
    """Slicer's scene undo is off by default, so SaveStateForUndo does nothing: the logic keeps the undo itself."""
    assert not headless.scene.GetUndoFlag()
    volume = headless.load(t2w_test_record.image)
    first = logic.process(volume, None, device="cpu")
    segmentation = first.segmentation_node
    corrected = segment_mask(segmentation, first.segment_id, volume)
    corrected[:5, :5, 5] = 1  # a stroke in a corner, where there is certainly no brain
    edit(segmentation, first.segment_id, volume, corrected)
    logic.process(volume, segmentation, device="cpu", replaceEdits=True)
    assert logic.canUndoLastRun(segmentation)
    logic.undoLastRun(segmentation)
    np.testing.assert_array_equal(segment_mask(segmentation, first.segment_id, volume), corrected)
    with pytest.raises(EditedSegmentError):  # the restored edits are still protected against a rerun
        logic.process(volume, segmentation, device="cpu")
    with pytest.raises(ValueError, match="no run of this segmentation to undo"):
        logic.undoLastRun(segmentation)


def test_undoing_a_first_run_removes_its_segment_and_edits_since_are_not_lost_silently(
    headless, logic, t2w_test_record
):
    volume = headless.load(t2w_test_record.image)
    job = logic.process(volume, None, device="cpu")
    segmentation = job.segmentation_node
    edited = segment_mask(segmentation, job.segment_id, volume)
    edited[:5, :5, 5] = 1
    edit(segmentation, job.segment_id, volume, edited)
    with pytest.raises(EditedSegmentError, match="edited after the run"):
        logic.undoLastRun(segmentation)
    np.testing.assert_array_equal(segment_mask(segmentation, job.segment_id, volume), edited)
    logic.undoLastRun(segmentation, replaceEdits=True)
    assert find_brain_segment(segmentation) is None


class GatedBackend:
    """The real backend, whose first forward pass waits until the test opens the gate."""

    def __init__(self, backend):
        self.backend, self.gate = backend, threading.Event()
        self.name, self.device, self.metadata = backend.name, backend.device, backend.metadata

    def predict(self, images):
        assert self.gate.wait(timeout=120)
        return self.backend.predict(images)

    def describe(self):
        return self.backend.describe()


@pytest.fixture
def gated_logic():
    segmenter = Segmenter(device="cpu", batch_size=2)
    segmenter.backend = GatedBackend(segmenter.backend)
    return BrainSegmentationLogic(segmenter_factory=lambda device, precision: segmenter), segmenter.backend


def test_the_worker_segments_a_copy_not_the_nodes_live_memory(headless, gated_logic, engine_mask, t2w_test_record):
    logic, gate = gated_logic
    volume = headless.load(t2w_test_record.image)
    job = logic.process(volume, None, device="cpu", waitForCompletion=False)
    slicer.util.arrayFromVolume(volume)[:] = 0  # the user (or a receiver) changes the voxels meanwhile
    volume.Modified()
    gate.gate.set()
    job.wait(timeout=300)
    assert job.state == "done"
    np.testing.assert_array_equal(
        on_file_grid(segment_mask(job.segmentation_node, job.segment_id, volume), volume, t2w_test_record.image),
        engine_mask,
    )


def test_closing_the_scene_cancels_a_running_job_and_stops_live_mode(headless, gated_logic, t2w_test_record):
    logic, gate = gated_logic
    volume = headless.load(t2w_test_record.image)
    gate.gate.set()
    live = logic.startLive(volume, None, device="cpu")
    assert live._observers
    gate.gate.clear()
    job = logic.process(headless.load(t2w_test_record.image, "second"), None, device="cpu", waitForCompletion=False)
    headless.scene.Clear(0)
    assert job.state == "cancelled" and job.poll()  # ended at once; polling again is harmless
    assert not live._observers
    gate.gate.set()


def test_live_mode_never_runs_the_network_on_the_main_thread(headless, gated_logic, t2w_test_record):
    """Starting Live on a whole stack returns at once: the first pass, like every later slice, is the worker's."""
    logic, gate = gated_logic
    threads = []
    predict = gate.predict
    gate.predict = lambda images: threads.append(threading.current_thread()) or predict(images)
    volume = headless.load(t2w_test_record.image)
    slices = Stack(read_volume(t2w_test_record.image)).num_slices
    live = logic.startLive(volume, None, device="cpu")  # the gate is shut: a network run here would block
    assert live.results == {} and live.pending == slices
    gate.gate.set()
    live.wait(timeout=300)
    assert sorted(live.results) == list(range(slices))
    assert threads and threading.main_thread() not in threads
    mask = segment_mask(live.segmentation_node, live.segment_id, volume)
    assert mask.any()
    live.stop()


def test_the_panel_improves_the_model_from_the_users_corrections_and_offers_it(headless, logic, manifest):
    """Improve from my corrections: the stacks whose Brain segment the user edited, and only those, teach a site
    model on a worker thread; it joins the model list, the shipped weights stay selectable, and nothing of the
    user's changes."""
    records = {r.name: r for r in manifest}
    nodes = {}
    corrected = ("e2mip_testing_0000", "e2mip_validation_slice_T2W_vol0005")  # small T2W stacks: 12 and 5 slices
    for name in (*corrected, "e2mip_training_0003"):
        volume = headless.load(records[name].image, name)
        job = logic.process(volume, None, device="cpu")
        nodes[name] = (volume, job.segmentation_node, job.segment_id)
    for name in corrected:  # the user corrects these two, draws nothing on the third
        volume, segmentation, segment_id = nodes[name]
        manual = read_volume(records[name].mask)
        shape = tuple(volume.GetImageData().GetDimensions())
        edit(segmentation, segment_id, volume, reorder_to_grid(manual.data, manual.affine, ijk_to_ras(volume), shape))
    corrections = logic.editedCorrections(headless.scene)
    assert {v.GetName() for v, _ in corrections} == set(corrected)
    before = {n: mask_digest(segment_mask(s, i, v)) for n, (v, s, i) in nodes.items()}

    plumbing = dict(steps=2, check_every=2, batch_size=2, min_gain=-1.0, device="cpu")  # always written: learning
    job = logic.improveFromCorrections(corrections, "panel-site", waitForCompletion=False, **plumbing)  # test_adapt
    assert job.text().startswith("Improving from your corrections")
    job.wait(timeout=900)
    assert job.state == "done" and job.result.kept and "site model written" in job.text(), job.text()
    assert "panel-site" in logic.siteModels()
    assert {n: mask_digest(segment_mask(s, i, v)) for n, (v, s, i) in nodes.items()} == before
    site = BrainSegmentationLogic()  # the real factory: a site model by name, the shipped weights without
    volume = nodes[corrected[0]][0]
    adapted = site.process(volume, None, device="cpu", model="panel-site")
    assert adapted.state == "done" and site.segmenter("cpu", "fp32", "panel-site").site["name"] == "panel-site"
    assert site.segmenter("cpu", "fp32").site is None
    with pytest.raises(ValueError, match="no corrected stacks"):
        logic.improveFromCorrections([], "nothing")


def test_the_panels_mask_margin_widens_the_segment_in_plane_and_is_recorded_in_the_export(
    headless, t2w_test_record, tmp_path
):
    """Mask margin (the panel's and the web app's): each slice's mask grown by the margin in mm, other slices
    untouched, and the exported mask's header says so; undo puts the previous description back."""
    import nibabel

    def factory(device, precision, **options):
        return Segmenter(device=device, precision=precision, zoom=1, **options)

    logic = BrainSegmentationLogic(factory)
    volume = headless.load(t2w_test_record.image)
    plain = logic.process(volume, None, device="cpu")
    wide = logic.process(volume, None, device="cpu", marginMm=3.0)
    plain_mask = segment_mask(plain.segmentation_node, plain.segment_id, volume) > 0
    wide_mask = segment_mask(wide.segmentation_node, wide.segment_id, volume) > 0
    assert logic.segmenter("cpu", "fp32", marginMm=3.0) is not logic.segmenter("cpu", "fp32")
    assert (wide_mask >= plain_mask).all()
    axis = plain.slice_axis
    brain_slices = np.flatnonzero(plain_mask.any(axis=tuple(k for k in range(3) if k != axis)))
    grown = np.moveaxis(wide_mask, axis, 0).sum(axis=(1, 2)) - np.moveaxis(plain_mask, axis, 0).sum(axis=(1, 2))
    assert (grown[brain_slices] > 0).all() and (np.delete(grown, brain_slices) == 0).all()
    pixel_mm2 = np.delete(np.linalg.norm(ijk_to_ras(volume)[:3, :3], axis=0), axis).prod()
    # a 3 mm ring around a convex section of area A holds 3 P + 9 pi mm², P >= 2 sqrt(pi A): at least 2 mm's worth
    areas = np.moveaxis(plain_mask, axis, 0).sum(axis=(1, 2))[brain_slices] * pixel_mm2
    assert (grown[brain_slices] * pixel_mm2 >= 2 * 2 * np.sqrt(np.pi * areas)).all()

    for job, expected in ((plain, "FetalBrainSeg brain mask"), (wide, "FetalBrainSeg brain mask, margin 3 mm")):
        path = logic.exportMask(job.segmentation_node, volume, tmp_path / f"{job.segment_id}.nii.gz")
        assert nibabel.load(path).header["descrip"].item().decode() == expected
    again = logic.process(volume, wide.segmentation_node, device="cpu")  # the margin off again, then undone
    logic.undoLastRun(again.segmentation_node)
    path = logic.exportMask(wide.segmentation_node, volume, tmp_path / "undone.nrrd")
    import nrrd

    assert nrrd.read_header(str(path))["content"] == "FetalBrainSeg brain mask, margin 3 mm"
