"""The module panel: pick a stack and a model, Segment (then Cancel), watch masks appear, review slices,
edit in the Segment Editor, export, and improve a site model from the corrections. Qt and Slicer GUI calls
only; the work is done by `BrainSegmentationLogic` on worker threads, and MRML and the panel are updated by
timers on the main thread, so the GUI never freezes."""

from __future__ import annotations

from pathlib import Path

import qt
import slicer

from ..engine.outputs import mask_path_for
from ..engine.site_models import default_site_name
from ..engine.volume_io import VolumeError
from ..resources import resource_path
from .dependencies import ensure_dependencies
from .job_messages import finished_text, progress_text, slice_cells
from .logic import ADAPT_MINUTES, BrainSegmentationLogic, EditedSegmentError, find_brain_segment, slice_center_ras

POLL_INTERVAL_MS = 50
REVIEW_COLOR = (255, 214, 140)
SLICE_COLUMNS = ("Slice", "Brain area (mm²)", "Confidence", "Review")


def _torch_utils_logic():
    """The PyTorch extension's installer, when that extension is installed."""
    try:
        import PyTorchUtils  # noqa: PLC0415 (optional extension)
    except ImportError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()


class SegmentationWidget(qt.QWidget):
    def __init__(self, logic: BrainSegmentationLogic | None = None, parent=None):
        super().__init__(parent)
        self.logic = logic or BrainSegmentationLogic()
        self.job = None
        self.live = None
        self.adaptation = None
        self._parameterNode = None
        self._guiConnection = None
        layout = qt.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        uiWidget = slicer.util.loadUI(str(resource_path("UI/FetalBrainSeg.ui")))
        layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.sliceTable.setColumnCount(len(SLICE_COLUMNS))
        self.ui.sliceTable.setHorizontalHeaderLabels(SLICE_COLUMNS)

        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self.onPoll)
        self.liveTimer = qt.QTimer()  # Live mode's answers come from its worker thread; written here
        self.liveTimer.setInterval(POLL_INTERVAL_MS)
        self.liveTimer.timeout.connect(self.onLivePoll)
        self.adaptTimer = qt.QTimer()  # the adaptation runs on its worker thread; its progress is shown from here
        self.adaptTimer.setInterval(POLL_INTERVAL_MS)
        self.adaptTimer.timeout.connect(self.onAdaptPoll)
        self.ui.improveButton.clicked.connect(self.onImproveClicked)
        self.ui.adaptMinutesSpinBox.value = ADAPT_MINUTES
        self.ui.segmentButton.clicked.connect(self.onSegmentClicked)
        self.ui.liveCheckBox.toggled.connect(self.onLiveToggled)
        self.ui.sliceTable.cellClicked.connect(self.onSliceClicked)
        self.ui.editButton.clicked.connect(self.onEdit)
        self.ui.undoRunButton.clicked.connect(self.onUndoRun)
        self.ui.exportMaskButton.clicked.connect(self.onExportMask)
        self.ui.exportSegmentationButton.clicked.connect(self.onExportSegmentation)
        self.ui.inputVolumeSelector.currentNodeChanged.connect(self.updateButtons)
        self.ui.outputSegmentationSelector.currentNodeChanged.connect(self.updateButtons)
        self.refreshModels()
        self.updateButtons()

    # -------------------------------------------------------------- parameter node
    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode is not None and self._guiConnection is not None:
            self._parameterNode.disconnectGui(self._guiConnection)
        self._parameterNode = parameterNode
        self._guiConnection = parameterNode.connectGui(self.ui) if parameterNode is not None else None
        self.updateButtons()

    def cleanup(self) -> None:
        self.stopRuns()
        self.setParameterNode(None)

    def stopRuns(self) -> None:
        """Stop polling, Live mode and a running job (its segment is put back); for a closing scene or panel."""
        self.timer.stop()
        self.stopLive()
        if self.job is not None:
            self.job.cancel_now()  # never waits: the worker's later chunks are simply not read
        if self.adapting:
            self.adaptation.cancel()  # writes nothing; the worker stops at its next step
        self.adaptTimer.stop()
        self.updateButtons()

    # -------------------------------------------------------------- state
    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    @property
    def adapting(self) -> bool:
        return self.adaptation is not None and not self.adaptation.finished

    def refreshModels(self) -> None:
        """The model list: the shipped weights, then this machine's site models; the choice is kept."""
        combo = self.ui.modelComboBox
        chosen = combo.currentText
        combo.clear()
        for choice in self.logic.modelChoices():
            combo.addItem(choice)
        combo.setCurrentIndex(max(combo.findText(chosen), 0))

    def updateButtons(self, *_) -> None:
        volume = self.ui.inputVolumeSelector.currentNode()
        segmentation = self.ui.outputSegmentationSelector.currentNode()
        hasResult = segmentation is not None and find_brain_segment(segmentation) is not None
        self.ui.segmentButton.text = "Cancel" if self.running else "Segment"
        self.ui.segmentButton.enabled = self.running or (volume is not None and self.live is None)
        self.ui.liveCheckBox.enabled = not self.running and volume is not None
        self.ui.segmentButton.toolTip = (
            "Stop; the segmentation goes back to how it was"
            if self.running
            else "Segment the brain on every slice of the input stack"
        )
        for widget in (
            self.ui.inputVolumeSelector,
            self.ui.outputSegmentationSelector,
            self.ui.deviceComboBox,
            self.ui.precisionComboBox,
            self.ui.thresholdSliderWidget,
            self.ui.modelComboBox,
            self.ui.marginSpinBox,
        ):
            widget.enabled = not self.running and self.live is None
        self.ui.improveButton.text = "Cancel" if self.adapting else "Improve from my corrections"
        self.ui.siteNameLineEdit.enabled = self.ui.adaptMinutesSpinBox.enabled = not self.adapting
        self.ui.editButton.enabled = not self.running and volume is not None and hasResult
        self.ui.undoRunButton.enabled = not self.running and self.logic.canUndoLastRun(segmentation)
        self.ui.exportMaskButton.enabled = not self.running and volume is not None and hasResult
        self.ui.exportSegmentationButton.enabled = not self.running and segmentation is not None

    # -------------------------------------------------------------- segment / cancel
    def dependenciesReady(self, training: bool = False) -> bool:
        return ensure_dependencies(
            confirm=slicer.util.confirmOkCancelDisplay,
            pip_install=slicer.util.pip_install,
            torch_utils_logic=_torch_utils_logic(),
            report=slicer.util.errorDisplay,
            gpu=self.ui.deviceComboBox.currentText == "cuda",
            precision=self.ui.precisionComboBox.currentText,
            training=training,
        )

    def onSegmentClicked(self) -> None:
        if self.running:
            self.job.cancel()
            self.ui.statusLabel.text = "Cancelling…"
            return
        if self.dependenciesReady():
            self.start()

    # -------------------------------------------------------------- live
    def onLiveToggled(self, checked: bool) -> None:
        self.stopLive()
        if checked and self.dependenciesReady():
            self.live = self._withConsent(
                lambda replace: self.logic.startLive(**self._runSettings(), replaceEdits=replace),
                "Cannot start live mode",
            )
            if self.live is not None:
                self.ui.outputSegmentationSelector.setCurrentNode(self.live.segmentation_node)
                self.ui.statusLabel.text = "Live: each new or changed slice of the input is segmented as it arrives."
                self.liveTimer.start()
        if self.live is None and self.ui.liveCheckBox.checked:
            self.ui.liveCheckBox.checked = False
        self.updateButtons()

    def onLivePoll(self) -> None:
        try:
            self.live.poll()
        except Exception as exc:  # never leave the timer firing on an error
            self.stopLive()
            self.ui.liveCheckBox.checked = False
            slicer.util.errorDisplay(f"Live mode stopped: {exc}")
            return
        if self.live.error:
            self.ui.statusLabel.text = f"Live: {self.live.error}"

    def stopLive(self) -> None:
        self.liveTimer.stop()
        if self.live is not None:
            self.live.stop()
            self.live = None
            self.ui.statusLabel.text = "Live mode stopped."

    def _runSettings(self) -> dict:
        """The panel's settings, as the logic's process and startLive take them."""
        return {
            "inputVolume": self.ui.inputVolumeSelector.currentNode(),
            "outputSegmentation": self.ui.outputSegmentationSelector.currentNode(),
            "device": self.ui.deviceComboBox.currentText,
            "threshold": self.ui.thresholdSliderWidget.value,
            "precision": self.ui.precisionComboBox.currentText,
            "model": self.logic.modelName(self.ui.modelComboBox.currentText),
            "marginMm": self.ui.marginSpinBox.value,
        }

    def _withConsent(self, action, failure: str):
        """action(replaceEdits): asked first before replacing edits; errors become a message, and None."""
        replace = False
        while True:
            try:
                with slicer.util.WaitCursor():
                    return action(replace)
            except EditedSegmentError as exc:
                if replace or not slicer.util.confirmYesNoDisplay(
                    f"{exc}.\n\nReplace the edited segment? Choose No to keep your edits "
                    "(or pick another output segmentation)."
                ):
                    return None
                replace = True
            except (ValueError, VolumeError, FileNotFoundError, RuntimeError, ImportError) as exc:
                slicer.util.errorDisplay(f"{failure}: {exc}")
                return None

    def start(self) -> None:
        job = self._withConsent(
            lambda replace: self.logic.process(
                **self._runSettings(), waitForCompletion=False, replaceEdits=replace, onProgress=self.onProgress
            ),
            "Cannot segment",
        )
        if job is None:
            return
        self.job = job
        self.ui.outputSegmentationSelector.setCurrentNode(job.segmentation_node)
        slicer.util.setSliceViewerLayers(background=job.volume_node, fit=True)
        self.ui.sliceTable.setRowCount(0)
        self.ui.progressBar.maximum = job.total
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = f"Segmenting {job.total} slices…"
        self.timer.start()
        self.updateButtons()

    def onPoll(self) -> None:
        try:
            finished = self.job.poll()
        except Exception as exc:  # never leave the timer firing on an error: stop, put the segment back, say why
            self.timer.stop()
            self.job.cancel_now()
            slicer.util.errorDisplay(f"Segmentation failed: {exc}")
            self.updateButtons()
            return
        if finished:
            self.timer.stop()
            self.onFinished()

    def onProgress(self, job) -> None:
        self.ui.progressBar.value = job.done_slices
        self.ui.statusLabel.text = progress_text(job)
        table = self.ui.sliceTable  # refilled whole: the final rows (post-processed areas, flags) replace the live ones
        table.setRowCount(len(job.statistics))
        for row, stats in enumerate(job.statistics):
            for column, text in enumerate(slice_cells(stats)):
                item = qt.QTableWidgetItem(text)
                if stats.flagged:
                    item.setBackground(qt.QColor(*REVIEW_COLOR))
                table.setItem(row, column, item)

    def onFinished(self) -> None:
        job = self.job
        self.ui.statusLabel.text = finished_text(job)
        if job.state == "failed":
            slicer.util.errorDisplay(f"Segmentation failed: {job.error}")
        self.updateButtons()

    # -------------------------------------------------------------- review, edit, export
    def onSliceClicked(self, row: int, column: int) -> None:
        if self.job is None:
            return
        index = int(self.ui.sliceTable.item(row, 0).text())
        position = slice_center_ras(self.job.volume_node, self.job.slice_axis, index)
        slicer.modules.markups.logic().JumpSlicesToLocation(*position, True)

    def onUndoRun(self) -> None:
        segmentation = self.ui.outputSegmentationSelector.currentNode()
        undone = self._withConsent(
            lambda replace: self.logic.undoLastRun(segmentation, replaceEdits=replace) or True, "Cannot undo"
        )
        if undone:
            self.ui.sliceTable.setRowCount(0)
            self.ui.statusLabel.text = "The brain segment is back as it was before the last run."
        self.updateButtons()

    def onEdit(self) -> None:
        segmentation = self.ui.outputSegmentationSelector.currentNode()
        volume = self.ui.inputVolumeSelector.currentNode()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        if hasattr(editor, "setSourceVolumeNode"):
            editor.setSourceVolumeNode(volume)
        else:  # Slicer before 5.2
            editor.setMasterVolumeNode(volume)

    def _defaultFolder(self, volume) -> Path:
        storage = volume.GetStorageNode()
        name = storage.GetFileName() if storage is not None else None
        return Path(name).parent if name else Path.home()

    def onExportMask(self) -> None:
        volume = self.ui.inputVolumeSelector.currentNode()
        default = mask_path_for(self._defaultFolder(volume) / f"{volume.GetName()}.nii.gz", None)
        path = qt.QFileDialog.getSaveFileName(
            self, "Export brain mask", str(default), "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd)"
        )
        if not path:
            return
        try:  # the file dialog has already asked before replacing an existing file
            written = self.logic.exportMask(
                self.ui.outputSegmentationSelector.currentNode(), volume, path, overwrite=Path(path).exists()
            )
        except (ValueError, FileExistsError, OSError) as exc:
            slicer.util.errorDisplay(f"Export failed: {exc}")
            return
        self.ui.statusLabel.text = f"Brain mask written: {written}"

    def onExportSegmentation(self) -> None:
        segmentation = self.ui.outputSegmentationSelector.currentNode()
        volume = self.ui.inputVolumeSelector.currentNode()
        folder = self._defaultFolder(volume) if volume is not None else Path.home()
        path = qt.QFileDialog.getSaveFileName(
            self, "Export segmentation", str(folder / f"{segmentation.GetName()}.seg.nrrd"), "Segmentation (*.seg.nrrd)"
        )
        if not path:
            return
        try:
            written = self.logic.exportSegmentation(segmentation, path, overwrite=Path(path).exists())
        except (ValueError, FileExistsError, OSError) as exc:
            slicer.util.errorDisplay(f"Export failed: {exc}")
            return
        self.ui.statusLabel.text = f"Segmentation written: {written}"

    # -------------------------------------------------------------- learn from corrections
    def onImproveClicked(self) -> None:
        if self.adapting:
            self.adaptation.cancel()
            self.ui.adaptStatusLabel.text = "Cancelling…"
            return
        corrections = self.logic.editedCorrections(slicer.mrmlScene)
        if not corrections:
            slicer.util.errorDisplay(
                "No corrected stacks yet: segment a stack, fix its Brain segment in the Segment Editor, then "
                "click Improve from my corrections."
            )
            return
        if not self.dependenciesReady(training=True):
            return
        name = self.ui.siteNameLineEdit.text.strip() or default_site_name()
        try:
            job = self.logic.improveFromCorrections(
                corrections,
                name,
                waitForCompletion=False,
                minutes=self.ui.adaptMinutesSpinBox.value,
                device=self.ui.deviceComboBox.currentText,
            )
        except (ValueError, FileExistsError, VolumeError, OSError, ImportError) as exc:
            slicer.util.errorDisplay(f"Cannot improve the model: {exc}")
            return
        self.adaptation = job
        stacks = ", ".join(volume.GetName() for volume, _ in corrections)
        self.ui.adaptStatusLabel.text = f"Learning '{name}' from your corrections of {stacks}…"
        self.ui.adaptProgressBar.value = 0
        self.adaptTimer.start()
        self.updateButtons()

    def onAdaptPoll(self) -> None:
        job = self.adaptation
        self.ui.adaptProgressBar.value = round(100 * job.fraction)
        self.ui.adaptStatusLabel.text = job.text()
        if not job.poll():
            return
        self.adaptTimer.stop()
        if job.state == "done" and job.result.kept:  # offered, not chosen: the user picks it for the next run
            self.refreshModels()
            self.ui.adaptStatusLabel.text = f"{job.text()} It is now in the Model list as '{job.settings.name}'."
        elif job.state == "failed":
            slicer.util.errorDisplay(job.text())
        self.updateButtons()
