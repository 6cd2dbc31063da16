"""FetalBrainSeg: real-time fetal brain segmentation on every slice of fetal MRI (RFBSNet).

A thin shell in Slicer's conventions; the panel, the MRML glue and the engine live in
FetalBrainSegLib, which the command line and the Python API share.
"""

import os
import sys
import tempfile
from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from FetalBrainSegLib.engine.inference import SegmenterOptions
from FetalBrainSegLib.engine.postprocess import MAX_MARGIN_MM
from FetalBrainSegLib.slicer.logic import BrainSegmentationLogic


class FetalBrainSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Fetal Brain Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["FetalBrainSeg developers"]
        self.parent.helpText = (
            "Segments the fetal brain on every 2D slice of a fetal MRI stack with RFBSNet. Pick the stack, click "
            "Segment and watch masks appear; fix slices in the Segment Editor; export the mask for NiftyMIC, SVRTK "
            "or NeSVoR. See the project README."
        )
        self.parent.acknowledgementText = (
            "RFBSNet: Faghihpirayesh et al., Deep Learning Framework for Real-time Fetal Brain Segmentation in MRI, "
            "2022."
        )


@parameterNodeWrapper
class FetalBrainSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    # defaults: the engine's (SegmenterOptions); the panel offers the CPU runtimes' precisions that need no setup
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = SegmenterOptions.device
    precision: Annotated[str, Choice(["fp32", "int8"])] = SegmenterOptions.precision
    threshold: Annotated[float, WithinRange(0.01, 0.99)] = SegmenterOptions.threshold
    marginMm: Annotated[float, WithinRange(0.0, MAX_MARGIN_MM)] = SegmenterOptions.margin_mm


class FetalBrainSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None, logic=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic or FetalBrainSegLogic()
        self.panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from FetalBrainSegLib.slicer.widget import SegmentationWidget

        self.panel = SegmentationWidget(self.logic)
        self.layout.addWidget(self.panel)
        self.layout.addStretch(1)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.panel.setParameterNode(self.logic.getParameterNode())

    def onSceneStartClose(self, caller, event):
        self.panel.stopRuns()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.panel.setParameterNode(self.logic.getParameterNode())

    def enter(self):
        self.panel.setParameterNode(self.logic.getParameterNode())

    def cleanup(self):
        self.removeObservers()
        if self.panel is not None:
            self.panel.cleanup()

    def onReload(self):
        """Developer mode's Reload: forget the Lib modules too, so that edits to them take effect."""
        for name in [n for n in sys.modules if n == "FetalBrainSegLib" or n.startswith("FetalBrainSegLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)


class FetalBrainSegLogic(ScriptedLoadableModuleLogic, BrainSegmentationLogic):
    """Use from Slicer's Python console too:
    `FetalBrainSegLogic().process(volumeNode, None, device="cpu", waitForCompletion=True)`."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        BrainSegmentationLogic.__init__(self)

    def getParameterNode(self):
        return FetalBrainSegParameterNode(super().getParameterNode())


class FetalBrainSegTest(ScriptedLoadableModuleTest):
    """Reload and Test: the public CC0 sample stack (or $FETALBRAINSEG_TEST_STACK) through the logic.
    On a stock Slicer it first installs what the module installs on first use; what it cannot get
    (offline) ends the test with one plain sentence."""

    def setUp(self):
        from FetalBrainSegLib.slicer.self_test import SelfTestUnavailable, prepare_self_test

        slicer.mrmlScene.Clear()
        try:
            self.stack_path = prepare_self_test(slicer.util.pip_install)
        except SelfTestUnavailable as exc:
            self.fail(str(exc))

    def runTest(self):
        self.setUp()
        self.test_segment_export_and_rerun()
        self.setUp()
        self.test_cancel_restores_the_segmentation()

    def _stack(self):
        return slicer.util.loadVolume(str(self.stack_path))

    def test_segment_export_and_rerun(self):
        from FetalBrainSegLib.engine.stack import reorder_to_grid
        from FetalBrainSegLib.engine.volume_io import read_volume
        from FetalBrainSegLib.slicer.logic import (
            EditedSegmentError,
            find_brain_segment,
            ijk_to_ras,
            segment_mask,
            write_segment,
        )

        self.delayDisplay("Segmenting the sample stack")
        volume = self._stack()
        logic = FetalBrainSegLogic()
        job = logic.process(volume, None, device="cpu")
        self.assertEqual(job.state, "done")
        mask = segment_mask(job.segmentation_node, job.segment_id, volume)
        self.assertGreater(int((mask.sum(axis=tuple(a for a in range(3) if a != job.slice_axis)) > 0).sum()), 5)

        self.delayDisplay("Exporting the mask on the stack's own grid")
        source_path = volume.GetStorageNode().GetFileName()
        with tempfile.TemporaryDirectory() as folder:
            written = read_volume(logic.exportMask(job.segmentation_node, volume, os.path.join(folder, "m.nii.gz")))
        source = read_volume(source_path)
        self.assertTrue((written.affine == source.affine).all())
        on_file = reorder_to_grid(mask, ijk_to_ras(volume), source.affine, source.data.shape)
        self.assertTrue((written.data == on_file).all())

        self.delayDisplay("Re-running keeps other segments")
        other = job.segmentation_node.GetSegmentation().AddEmptySegment("", "Placenta")
        logic.process(volume, job.segmentation_node, device="cpu")
        self.assertIsNotNone(job.segmentation_node.GetSegmentation().GetSegment(other))
        self.assertEqual(find_brain_segment(job.segmentation_node), job.segment_id)

        self.delayDisplay("An edited brain segment is not replaced without consent")
        edited = segment_mask(job.segmentation_node, job.segment_id, volume)
        edited[tuple(s // 2 for s in edited.shape)] ^= 1
        write_segment(job.segmentation_node, job.segment_id, edited, ijk_to_ras(volume))
        with self.assertRaises(EditedSegmentError):
            logic.process(volume, job.segmentation_node, device="cpu")
        self.assertTrue((segment_mask(job.segmentation_node, job.segment_id, volume) == edited).all())
        self.delayDisplay("Test passed")

    def test_cancel_restores_the_segmentation(self):
        volume = self._stack()
        logic = FetalBrainSegLogic()
        job = logic.process(volume, None, device="cpu", waitForCompletion=False, onProgress=lambda job: job.cancel())
        job.wait(timeout=300)
        self.assertEqual(job.state, "cancelled")
        self.assertEqual(job.segmentation_node.GetSegmentation().GetNumberOfSegments(), 0)
        self.delayDisplay("Test passed")
