"""The browser front end (`fetalbrainseg serve`): trame-slicer's slice view, segment editor
effects (paint, erase, islands, smoothing, ...) and undo, around the same
`BrainSegmentationLogic` the Slicer module uses. Segmentation runs on a worker thread and an
asyncio task writes each chunk into the scene, so masks appear slice by slice."""

from __future__ import annotations

import asyncio
import base64
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiohttp import web
from slicer import vtkSegmentation
from trame.app import get_server
from trame.app.file_upload import ClientFile
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3
from trame_server.utils.typed_state import TypedState
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import SegmentationAppLogic, VolumePropertyLogic
from trame_slicer.app.ui import LayoutButtonState, PaintEffectState, SegmentationAppUI
from trame_slicer.core import SlicerApp
from vtk import vtkObject

from ..engine.outputs import mask_path_for, output_problem
from ..engine.postprocess import MAX_MARGIN_MM
from ..engine.site_models import default_site_name
from ..engine.stack import slice_axis
from ..engine.volume_io import VolumeError, strip_suffix
from ..resources import resource_path
from ..slicer.job_messages import finished_text, progress_text, slice_cells
from ..slicer.logic import (
    ADAPT_MINUTES,
    BrainSegmentationLogic,
    EditedSegmentError,
    SegmentSnapshot,
    ijk_to_ras,
    restore_segments,
    slice_center_ras,
    snapshot_segments,
    write_correction,
)
from .access import protect
from .library import PathRefused, StackLibrary

POLL_SECONDS = 0.1
EDIT_REFRESH_SECONDS = 0.3  # the slice list follows edits this long after a stroke's first change
WINDOW_PERCENTILE = 99.5  # of the non-zero voxels: the top of the display window
SHOWN_VIEW = "Red"  # the slice view of the "Axial Only" layout, whatever plane it is turned to
OWNER_ANSWER_S = 2.0  # a working tab that does not answer within this long is gone: the newest tab takes over


def _elements(element):
    """A trame element and every element inside it."""
    yield element
    for child in getattr(element, "children", []):
        if not isinstance(child, str):
            yield from _elements(child)


def _attribute(element, name: str):
    try:
        return element[name]
    except KeyError:
        return None


def slice_rows(statistics) -> list[dict]:
    """The slice list's rows, as the panel shows them."""
    return [dict(zip(("index", "area", "confidence", "review"), slice_cells(s))) for s in statistics]


@contextmanager
def _quiet_vtk():
    """trame-slicer's views observe WindowResizeEvent, which this VTK warns about once per view at start-up
    (a deprecation, in colour, three times): nothing a user can act on, so silenced while they are built."""
    previous = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        yield
    finally:
        vtkObject.SetGlobalWarningDisplay(previous)


def _answer_session_requests(server) -> None:
    """trame's page first asks a session launcher where its websocket is (POST /paraview/), and after this
    server's 405 (logged as an error on every page load) falls back on /ws: answer it with that websocket."""

    async def session(request: web.Request) -> web.Response:
        return web.json_response({"sessionURL": f"{'wss' if request.secure else 'ws'}://{request.host}/ws"})

    server.controller.on_server_bind.add(lambda wslink_server: wslink_server.app.router.add_post("/paraview/", session))


def _crop_rendered_volumes_only(set_crop):
    """trame-slicer 2.0.0 toggles the volume-rendering crop on page load, with no volume rendered, and fails on
    the missing ROI ('NoneType' object has no attribute 'GetROINode'): this app renders no volume in 3D."""

    def guarded(logic, active: bool) -> None:
        volume = logic._volume_node
        if volume is not None and logic._volume_rendering.get_vr_display_node(volume) is not None:
            set_crop(logic, active)

    return guarded


VolumePropertyLogic._set_volume_crop_active = _crop_rendered_volumes_only(VolumePropertyLogic._set_volume_crop_active)
MASK_FORMATS = [".nii.gz", ".nrrd"]


@dataclass
class KeptWork:
    segments: list[SegmentSnapshot]
    rows: list[dict]  # the slice list


class WebApp:
    def __init__(
        self,
        library: StackLibrary,
        logic: BrainSegmentationLogic | None = None,
        device: str = "auto",
        server=None,
        model: str = "",
    ):
        """`model`: the site model chosen at start (serve --model); the Model list offers the others."""
        self.library = library
        self.logic = logic or BrainSegmentationLogic()
        self.device = device
        self.job = None
        self.adaptation = None
        self._slices_stale = False  # the brain segment was edited since the slice list was made
        self.loaded_stack: str | None = None
        self._claimants: list[str] = []  # tabs that opened while another worked, until it answers (claim)
        self._kept: dict[str, KeptWork] = {}  # by stack name: work on stacks not shown now
        # by stack name: the image and corrected mask of each stack not shown now whose brain segment was edited
        self._corrected: dict[str, tuple[Path, Path]] = {}
        self._corrections = tempfile.TemporaryDirectory(prefix="fetalbrainseg-web-corrections-")
        self.server = server or get_server(client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        _answer_session_requests(self.server)
        with _quiet_vtk():
            self.slicer_app = SlicerApp()
            self._viewer = SegmentationAppLogic(self.server, self.slicer_app)
            self._ui = SegmentationAppUI(self.server, self._viewer.layout_manager)
            self._viewer.set_ui(self._ui)
        # trame-slicer's title and favicon point at the internet; ours is served with the page
        icon = base64.b64encode(resource_path("Icons/FetalBrainSeg.png").read_bytes()).decode()
        self.state.update({"trame__title": "FetalBrainSeg", "trame__favicon": f"data:image/png;base64,{icon}"})
        TypedState(self.state, LayoutButtonState).data.current_layout_id = "Axial Only"
        self.state.update(
            {
                "fbs_stacks": library.names,
                "fbs_stack": None,
                "fbs_running": False,
                "fbs_progress": 0,
                "fbs_status": "Choose a stack.",
                "fbs_error": "",
                "fbs_slices": [],
                "fbs_replace_edits": False,
                "fbs_out_folder": "",
                "fbs_mask_format": MASK_FORMATS[0],
                "fbs_overwrite": False,
                "fbs_exported": [],
                "fbs_owner": "",  # the tab that works; every tab shows the one shared state
                "fbs_me": "",  # each tab's own random name, never shared (client_only below)
                "fbs_owner_ping": 0,  # asks the working tab to answer (claim)
                "fbs_waiting": [],  # tabs that know another one works: they say so
                "fbs_models": self.logic.modelChoices(),
                "fbs_model": model or self.logic.modelChoices()[0],
                "fbs_margin": 0,
                "fbs_site_name": "",
                "fbs_adapt_minutes": ADAPT_MINUTES,
                "fbs_adapting": False,
                "fbs_adapt_progress": 0,
                "fbs_adapt_status": "",
                "fbs_shown_slice": None,  # the stack's slice index in the view
                "fbs_slice_count": 0,
            }
        )
        self.state.client_only("fbs_me")
        self.state.change("fbs_stack")(self._on_stack_chosen)
        self.state.change("fbs_shown_slice")(self._on_slice_chosen)
        self.logic.segmenter(device)  # the model loads with the server, not inside the first Segment click
        # masks are per slice: paint and erase on the shown slice only (trame-slicer's default
        # brush is a sphere, which reaches into neighbouring slices)
        TypedState(self.state, PaintEffectState).data.use_sphere_brush = False
        self._build_panel()
        for view in self.slicer_app.view_manager.get_slice_views():
            if view.get_view_node().GetLayoutName() == SHOWN_VIEW:  # the others are hidden, at slices of their own
                view.modified.connect(self._on_view_moved)
        if library.names:  # the first stack is shown from the start
            self.state.fbs_stack = library.names[0]
            self._on_stack_chosen(library.names[0])

    @property
    def state(self):
        return self.server.state

    @property
    def volume_node(self):
        return self.slicer_app.segmentation_editor.active_volume_node

    @property
    def segmentation_node(self):
        return self.slicer_app.segmentation_editor.active_segmentation_node

    # ------------------------------------------------------------------ actions
    def load_stack(self, name: str):
        """Replace the scene with the named stack, shown in its own acquisition plane. The stack shown
        before keeps its segments (edits included) and slice list for the session: choosing it again
        brings them back."""
        path = self.library.stack(name)
        self.cancel()
        self._keep_work()
        self.slicer_app.scene.Clear()
        self.loaded_stack = None
        # the loader of trame-slicer's own upload button (2.0.0, pinned): shows the volume
        # and gives the segment editor an empty segmentation on it
        self._viewer._load_files_logic._on_load_volume_files([str(path)])
        if self.volume_node is None:
            raise VolumeError(f"{name}: not a readable image")
        self._show_acquisition_plane()
        self._set_window_level()
        self.loaded_stack = name
        kept = self._kept.get(name)
        if kept is not None:
            restore_segments(self.segmentation_node, self.volume_node, kept.segments)
            self.slicer_app.segmentation_editor.trigger_all_signals()
        self.state.update(  # nothing of the previous stack's run, ticks or messages carries over
            {
                "fbs_slices": kept.rows if kept else [],
                "fbs_progress": 100 if kept and kept.rows else 0,
                "fbs_exported": [],
                "fbs_error": "",
                "fbs_replace_edits": False,
                "fbs_overwrite": False,
                "fbs_status": f"{name}: your segments from earlier in this session are back."
                if kept
                else f"{name} loaded. Segment when ready.",
            }
        )
        return self.volume_node

    def _keep_work(self) -> None:
        """Keep the shown stack's segments and slice list before the scene is cleared, and its corrections as
        files a site model can learn from."""
        if self.loaded_stack is None or self.volume_node is None or self.segmentation_node is None:
            return
        edited = self.logic.editedCorrections(self.slicer_app.scene)
        if edited:
            stem = Path(self._corrections.name) / strip_suffix(self.loaded_stack)
            self._corrected[self.loaded_stack] = write_correction(*edited[0], stem)
        else:
            self._corrected.pop(self.loaded_stack, None)
        segments = snapshot_segments(self.segmentation_node, self.volume_node)
        if segments:
            self._kept[self.loaded_stack] = KeptWork(segments, list(self.state.fbs_slices))
        else:
            self._kept.pop(self.loaded_stack, None)

    def segment(self):
        """Start segmenting the shown stack; returns the job (poll it, or let the server do it). A click
        while a run is going (a double click) does nothing."""
        if self.job is not None and not self.job.finished:
            return None
        self.state.fbs_error = ""
        try:
            job = self.logic.process(
                self.volume_node,
                self.segmentation_node,
                device=self.device,
                waitForCompletion=False,
                replaceEdits=self.state.fbs_replace_edits,
                onProgress=self._on_progress,
                model=self.logic.modelName(self.state.fbs_model),
                marginMm=self._margin_mm(),
            )
        except EditedSegmentError as exc:
            self.state.fbs_error = f"{exc}. Tick 'Replace my edits' to segment again."
            return None
        except (ValueError, VolumeError, RuntimeError) as exc:
            self.state.fbs_error = f"Cannot segment: {exc}"
            return None
        self.job = job
        self.state.update(
            {"fbs_running": True, "fbs_slices": [], "fbs_progress": 0, "fbs_status": f"Segmenting {job.total} slices…"}
        )
        return job

    def _margin_mm(self) -> float:
        try:
            margin = float(self.state.fbs_margin or 0)
        except (TypeError, ValueError):
            margin = -1.0
        if not 0 <= margin <= MAX_MARGIN_MM:
            raise ValueError(f"the mask margin is a number of mm from 0 to {MAX_MARGIN_MM:g}")
        return margin

    def improve(self, **settings):
        """Learn a site model from the stacks corrected in this session (the one shown, if its brain segment was
        edited, and those kept from before); returns the job (poll it, or let the server do it), or None with
        the reason in fbs_error. Nothing of the user's changes. `settings`: AdaptSettings fields beyond the
        panel's name and minutes."""
        if self.adaptation is not None and not self.adaptation.finished:
            return None
        self.state.fbs_error = ""
        shown = self.logic.editedCorrections(self.slicer_app.scene) if self.volume_node is not None else []
        kept = [files for name, files in self._corrected.items() if name != self.loaded_stack]
        name = (self.state.fbs_site_name or "").strip() or default_site_name()
        try:
            job = self.logic.improveFromCorrections(
                shown,
                name,
                waitForCompletion=False,
                files=kept,
                **{"minutes": float(self.state.fbs_adapt_minutes), "device": self.device, **settings},
            )
        except (ValueError, TypeError, FileExistsError, ImportError, VolumeError, OSError) as exc:
            self.state.fbs_error = f"Cannot improve the model: {exc}"
            return None
        self.adaptation = job
        self.state.update(
            {
                "fbs_adapting": True,
                "fbs_adapt_progress": 0,
                "fbs_adapt_status": f"Learning '{name}' from {len(shown) + len(kept)} corrected stacks…",
            }
        )
        return job

    def cancel_improve(self):
        if self.adaptation is not None and not self.adaptation.finished:
            self.adaptation.cancel()

    def upload(self, files):
        """A stack sent from the page: checked like any input, then offered and shown."""
        if not files:
            return
        file = ClientFile(files[0])
        self.state.update({"fbs_error": "", "fbs_exported": [], "fbs_status": ""})  # no stale message beside it
        try:
            name = self.library.add_upload(file.name, file.content or b"")
        except VolumeError as exc:
            self.state.fbs_error = f"Upload refused: {exc}"
            return
        self.state.fbs_stacks = self.library.names
        self.state.fbs_stack = name

    def cancel(self):
        if self.job is not None and not self.job.finished:
            self.job.cancel()

    def claim(self, tab: str, take_over: bool = False) -> None:
        """One tab works at a time: the first to open, or one whose user chose to take over (the tab it took over
        from then waits). A tab that opens while another works asks that one to answer, and waits only once it
        has: a reload or a closed browser leaves the old tab's name behind (its goodbye never arrives), and a
        working tab that does not answer within OWNER_ANSWER_S hands over to the newest tab silently."""
        owner = self.state.fbs_owner
        if not tab or tab == owner:
            return
        if take_over or not owner:
            waiting = [name for name in self.state.fbs_waiting if name != tab] + ([owner] if owner else [])
            self.state.update({"fbs_owner": tab, "fbs_waiting": waiting})
            return
        self._claimants.append(tab)
        self.state.fbs_owner_ping += 1
        asyncio.get_running_loop().call_later(
            OWNER_ANSWER_S, self._hand_over_unless_answered, self.state.fbs_owner_ping
        )

    def answer(self, tab: str, ping: int) -> None:
        """The working tab says it is still there: the tabs that asked wait."""
        if tab == self.state.fbs_owner and ping == self.state.fbs_owner_ping and self._claimants:
            self.state.fbs_waiting = [*self.state.fbs_waiting, *self._claimants]
            self._claimants = []

    def _hand_over_unless_answered(self, ping: int) -> None:
        with self.state:
            if ping == self.state.fbs_owner_ping and self._claimants:  # the newest works, the others wait
                *others, newest = self._claimants
                self.state.update({"fbs_owner": newest, "fbs_waiting": [*self.state.fbs_waiting, *others]})
                self._claimants = []

    def release(self, tab: str) -> None:
        self.state.fbs_waiting = [name for name in self.state.fbs_waiting if name != tab]
        if self.state.fbs_owner == tab:
            self.state.fbs_owner = ""

    def jump_to_slice(self, index: int):
        if self.volume_node is None:
            return
        position = slice_center_ras(self.volume_node, slice_axis(ijk_to_ras(self.volume_node)), int(index))
        for slice_node in self._slice_nodes():
            slice_node.JumpSliceByOffsetting(*position)

    def export(self):
        """The brain mask on the input's exact grid and the whole segmentation (.seg.nrrd), into
        the chosen sub-folder of the output folder; existing files only when asked."""
        # no earlier export listed or said beside a refusal
        self.state.update({"fbs_error": "", "fbs_exported": [], "fbs_status": ""})
        try:
            folder = self.library.output_folder(self.state.fbs_out_folder or "")
        except PathRefused as exc:
            self.state.fbs_error = f"Export refused: {exc}"
            return []
        name = self.loaded_stack or self.volume_node.GetName()
        mask = mask_path_for(folder / f"{strip_suffix(name)}{self.state.fbs_mask_format}", folder)
        segmentation = folder / f"{strip_suffix(name)}.seg.nrrd"
        for path in (mask, segmentation):  # both or neither
            if output_problem(path, set(), set(), self.state.fbs_overwrite):
                self.state.fbs_error = (
                    f"{path.name} already exists in {folder}; tick 'Replace existing files' to replace it"
                )
                return []
        try:
            written = [
                self.logic.exportMask(
                    self.segmentation_node, self.volume_node, mask, overwrite=self.state.fbs_overwrite
                ),
                self.logic.exportSegmentation(self.segmentation_node, segmentation, overwrite=self.state.fbs_overwrite),
            ]
        except (ValueError, FileExistsError, OSError) as exc:
            self.state.fbs_error = f"Export failed: {exc}"
            return []
        self.state.fbs_exported = [str(p) for p in written]
        self.state.fbs_status = f"Exported {len(written)} files to {folder}"
        return written

    # ------------------------------------------------------------------ server side
    def _on_stack_chosen(self, fbs_stack, **_):
        if not fbs_stack or fbs_stack == self.loaded_stack:
            return
        try:
            self.load_stack(fbs_stack)
        except (PathRefused, VolumeError) as exc:
            self.state.fbs_error = str(exc)
            self.state.fbs_stack = self.loaded_stack  # the panel names what the view shows

    def _on_slice_chosen(self, fbs_shown_slice, **_):
        if fbs_shown_slice is not None:  # the view follows; it already shows the slice when it set the number
            self.jump_to_slice(fbs_shown_slice)

    def _on_export_clicked(self) -> None:
        self.export()  # the paths stay on the server: a click's return value goes to the browser as JSON

    def _on_segment_clicked(self):
        if self.segment() is not None:
            asyncio.ensure_future(self._watch(self.job))

    async def _watch(self, job):
        while not job.poll():
            await asyncio.sleep(POLL_SECONDS)
        self._finished(job)

    def _finished(self, job):
        editor = self.slicer_app.segmentation_editor
        if job.state == "done":  # the editor's segment list and tools follow the new brain segment
            editor.set_active_segment_id(job.segment_id)
            self._follow_edits(job)
        editor.trigger_all_signals()
        with self.state:
            self.state.fbs_running = False
            self.state.fbs_status = finished_text(job)
            if job.state != "done":  # a cancelled or failed run's rows describe masks that were put back
                self.state.fbs_slices = []
            if job.state == "failed":
                self.state.fbs_error = job.error

    def _on_improve_clicked(self):
        if self.improve() is not None:
            asyncio.ensure_future(self._watch_adaptation(self.adaptation))

    async def _watch_adaptation(self, job):
        while not job.poll():
            with self.state:
                self.state.fbs_adapt_progress = round(100 * job.fraction)
                self.state.fbs_adapt_status = job.text()
            await asyncio.sleep(POLL_SECONDS)
        self._adaptation_finished(job)

    def _adaptation_finished(self, job):
        """The new site model joins the model list (the choice stays as it was); a failure is an error."""
        with self.state:
            self.state.fbs_adapting = False
            self.state.fbs_adapt_progress = 100 if job.state == "done" else 0
            self.state.fbs_adapt_status = job.text()
            self.state.fbs_models = self.logic.modelChoices()
            if job.state == "failed":
                self.state.fbs_error = job.text()

    def _on_progress(self, job):
        with self.state:
            self.state.fbs_progress = round(100 * job.done_slices / job.total)
            self.state.fbs_status = progress_text(job)
            self.state.fbs_slices = slice_rows(job.statistics)

    def _follow_edits(self, job):
        """Each edit of the finished run's brain segment (paint, erase, undo) brings a refresh_slices a moment later,
        never inside VTK's modification (reading the segment there crashes)."""

        def edited(*_):
            if self.job is not job or self._slices_stale:  # a stroke fires many events: one refresh after it
                return
            self._slices_stale = True
            try:
                asyncio.get_running_loop().call_later(EDIT_REFRESH_SECONDS, self.refresh_slices)
            except RuntimeError:  # no event loop (the app driven from Python): its caller refreshes
                pass

        job.segmentation_node.GetSegmentation().AddObserver(vtkSegmentation.SourceRepresentationModified, edited)

    def refresh_slices(self) -> None:
        """The slice list of the shown result as its brain segment is now, edits included: areas and review
        flags of edited slices recomputed."""
        self._slices_stale = False
        job = self.job
        segmentation = job.segmentation_node.GetSegmentation() if job is not None else None
        if job is not None and job.state == "done" and segmentation.GetSegment(job.segment_id) is not None:
            with self.state:
                self.state.fbs_slices = slice_rows(job.review_now())

    def _slice_nodes(self):
        return [
            self.slicer_app.scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
            for i in range(self.slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode"))
        ]

    def _set_window_level(self):
        """From the brightest tissue, not the brightest voxel: Slicer's automatic window reaches past the few hot
        voxels of a fetal stack, and the image started dark (a test measures it)."""
        from vtk.util.numpy_support import vtk_to_numpy

        voxels = vtk_to_numpy(self.volume_node.GetImageData().GetPointData().GetScalars())
        signal = voxels[voxels > 0]
        if signal.size:
            display = self.volume_node.GetDisplayNode()
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(0.0, float(np.percentile(signal, WINDOW_PERCENTILE)))

    def _on_view_moved(self, view) -> None:
        """The stack's slice index shown: the panel's slice slider follows the view (mouse wheel, arrow keys) and
        marks its row in the slice list."""
        if self.volume_node is None:
            return
        matrix = ijk_to_ras(self.volume_node)
        axis = slice_axis(matrix)
        count = self.volume_node.GetImageData().GetDimensions()[axis]
        normal = np.array([view.get_view_node().GetSliceToRAS().GetElement(i, 2) for i in range(3)])
        first = float(normal @ np.array(slice_center_ras(self.volume_node, axis, 0)))
        step = float(normal @ matrix[:3, axis])  # the offset from one slice to the next
        if abs(step) < 1e-6:  # a view across the slices (the other planes): no slice index
            return
        shown = int(np.clip(round((view.get_slice_value() - first) / step), 0, count - 1))
        with self.state:
            self.state.update({"fbs_shown_slice": shown, "fbs_slice_count": count})

    def _show_acquisition_plane(self):
        """Slice views look along the stack's slice axis, whatever the scanner orientation: the
        preset nearest to it, then rotated onto the volume's own planes."""
        matrix = ijk_to_ras(self.volume_node)
        normal = np.abs(matrix[:3, slice_axis(matrix)])
        orientation = ("Sagittal", "Coronal", "Axial")[int(np.argmax(normal))]
        for slice_node in self._slice_nodes():
            slice_node.SetOrientation(orientation)
            slice_node.RotateToVolumePlane(self.volume_node)
        for view in self.slicer_app.view_manager.get_slice_views():
            view.fit_view_to_content()

    def _build_panel(self):
        layout = self._ui.layout
        layout.title.set_text("FetalBrainSeg")
        # trame-slicer's open and save-scene buttons would bypass the offered stacks and the export
        # rules, and leave the panel naming a stack the view no longer shows: removed for real. Vuetify's
        # d-flex class is `display: flex !important`, so only an !important inline style hides them, and
        # the open buttons' signal loses its receivers, so a crafted client message loads nothing either.
        for button in (self._ui.load_volume_items_buttons, self._ui.download_scene_button):
            button.style = "display: none !important"
        self._ui.load_volume_items_buttons.on_load_volume.disconnect_all()
        # trame-slicer's About dialog loads logos from the internet, open or not: the app must work fully
        # offline, so the dialog leaves the page and its button is hidden
        layout.root.children[:] = [child for child in layout.root.children if type(child).__name__ != "VDialog"]
        # the effect buttons beside the view repeat the segment editor's own, in the left drawer: shown once
        layout.toolbar.children[:] = [
            child for child in layout.toolbar.children if type(child).__name__ != "SegmentEditorToolbarUI"
        ]
        for element in _elements(layout.root):
            if isinstance(element, v3.VBtn) and _attribute(element, "text") == "Add segment":
                # beside Segment before any result, it read as a second way to segment: the brain segment comes
                # from Segment, and the segment list's own + adds others
                element.v_if = ("false",)
        with layout:
            client.Style(
                'button[title="About trame-slicer"] { display: none !important; } '
                "#fbs-slices tr.fbs-shown td { background: rgba(66, 165, 245, 0.35); font-weight: 600; } "
                # trame-slicer's slider under the view moves the slice offset along the view's normal, which points
                # against the slice order in some acquisitions (slice 0 at the far right), and names no slice: the
                # panel's slice slider replaces it
                ".slice-slider-gutter { display: none !important; }"
            )
            self._build_ownership()
        # trame-slicer's editor keeps the left drawer; ours is on the right. It fills the window's height:
        # the controls above and below keep their size, and the slice list between them takes what is left
        # and scrolls, so an error box never pushes Export out of sight
        column = "display: flex; flex-direction: column; min-height: 0;"
        with layout, v3.VNavigationDrawer(location="right", permanent=True, width=360):
            with v3.VCard(classes="pa-2", variant="flat", style=f"{column} height: 100%; overflow-y: auto;"):
                v3.VCardTitle("Fetal brain", classes="px-2 py-1")
                with v3.VCardText(classes="px-2 py-1", style=f"{column} flex: 1 1 0;"):
                    with html.Div(style="flex: none;"):
                        v3.VSelect(
                            label="Stack",
                            items=("fbs_stacks",),
                            v_model=("fbs_stack",),
                            disabled=("fbs_running",),
                            density="compact",
                            hide_details=True,
                            id="fbs-stack",
                        )
                        max_mb = self.library.max_upload_bytes / 1e6
                        # the size is checked here first, so a huge file is never sent
                        v3.VFileInput(
                            label="…or upload a stack (.nii.gz, .nii, .nrrd)",
                            density="compact",
                            accept=".nii,.nii.gz,.nrrd,.gz",
                            id="fbs-upload",
                            disabled=("fbs_running",),
                            prepend_icon="mdi-upload",
                            show_size=True,
                            hide_details=True,
                            change=(
                                "const f = $event.target.files[0]; if (!f) { return; } "
                                f"if (f.size > {max_mb} * 1e6) {{ fbs_error = 'Upload refused: ' + f.name + "
                                f"' is ' + (f.size / 1e6).toFixed(0) + ' MB, more than the {max_mb:.0f} MB "
                                "this server accepts'; } else { fbs_error = ''; "
                                f"trame.trigger('{self.server.trigger_name(self.upload)}', "
                                "[$event.target.files]); }"
                            ),
                        )
                        with html.Div(classes="d-flex ga-2 mt-2"):
                            v3.VSelect(
                                label="Model",
                                items=("fbs_models",),
                                v_model=("fbs_model",),
                                disabled=("fbs_running",),
                                density="compact",
                                hide_details=True,
                                id="fbs-model",
                            )
                            v3.VTextField(
                                label="Margin (mm)",
                                v_model=("fbs_margin",),
                                type="number",
                                min=0,
                                max=MAX_MARGIN_MM,
                                step=0.5,
                                disabled=("fbs_running",),
                                density="compact",
                                hide_details=True,
                                style="flex: 0 0 104px;",
                                id="fbs-margin",
                            )
                        with html.Div(classes="d-flex ga-2 mt-2"):
                            v3.VBtn(
                                "Segment",
                                click=self._on_segment_clicked,
                                color="primary",
                                id="fbs-segment",
                                disabled=("fbs_running || !fbs_stack",),
                            )
                            v3.VBtn("Cancel", click=self.cancel, id="fbs-cancel", disabled=("!fbs_running",))
                        v3.VCheckbox(
                            label="Replace my edits",
                            v_model=("fbs_replace_edits",),
                            density="compact",
                            hide_details=True,
                        )
                        v3.VProgressLinear(model_value=("fbs_progress",), height=6, classes="my-2", id="fbs-progress")
                        html.Div("{{ fbs_status }}", id="fbs-status", classes="text-caption")
                        with html.Div(v_if=("fbs_slice_count > 0",), classes="d-flex align-center ga-2"):
                            v3.VSlider(
                                v_model=("fbs_shown_slice",),
                                min=0,
                                max=("fbs_slice_count - 1",),
                                step=1,
                                density="compact",
                                hide_details=True,
                                id="fbs-slice-slider",
                            )
                            html.Div(
                                "Slice {{ fbs_shown_slice }} of 0-{{ fbs_slice_count - 1 }}",
                                id="fbs-shown-slice",
                                classes="text-caption text-no-wrap",
                            )
                        v3.VAlert(
                            v_if=("fbs_error",),
                            text=("fbs_error",),
                            type="error",
                            density="compact",
                            id="fbs-error",
                            classes="my-2",
                        )
                    with v3.VTable(
                        density="compact",
                        fixed_header=True,
                        id="fbs-slices",
                        classes="text-caption",
                        style="flex: 1 1 0; min-height: 120px; overflow-y: auto;",
                    ):
                        with html.Thead():
                            with html.Tr():
                                for title in ("slice", "area mm²", "confidence", "review"):
                                    html.Th(title)
                        with html.Tbody():
                            with html.Tr(
                                v_for="row in fbs_slices",
                                key="row.index",
                                style="cursor: pointer",
                                classes=(
                                    "{'bg-orange-darken-4': row.review, "
                                    "'fbs-shown': row.index === String(fbs_shown_slice)}",
                                ),
                                click=(self.jump_to_slice, "[row.index]"),
                            ):
                                for key in ("index", "area", "confidence", "review"):
                                    html.Td(f"{{{{ row.{key} }}}}")
                    with html.Div(style="flex: none;"):
                        with html.Div(classes="d-flex ga-2 mt-2"):
                            v3.VTextField(
                                label="Output sub-folder",
                                v_model=("fbs_out_folder",),
                                density="compact",
                                hint=f"inside {self.library.out_dir}",
                                persistent_hint=True,
                                id="fbs-out-folder",
                            )
                            v3.VSelect(
                                label="Format",
                                items=("fbs_mask_formats", MASK_FORMATS),
                                v_model=("fbs_mask_format",),
                                density="compact",
                                hide_details=True,
                                style="flex: 0 0 116px;",
                            )
                        v3.VCheckbox(
                            label="Replace existing files",
                            v_model=("fbs_overwrite",),
                            density="compact",
                            hide_details=True,
                        )
                        v3.VBtn(
                            "Export",
                            click=self._on_export_clicked,
                            id="fbs-export",
                            disabled=("fbs_running || !fbs_stack",),
                        )
                        html.Div("{{ fbs_exported.join(', ') }}", id="fbs-exported", classes="text-caption")
                        self._build_improve()
        layout.flush_content()

    def _build_improve(self):
        """Learn from my corrections: a site model from the stacks whose brain segment was edited here."""
        with v3.VExpansionPanels(variant="accordion", classes="mt-2", id="fbs-improve-panel"):
            with v3.VExpansionPanel(title="Learn from my corrections"):
                with v3.VExpansionPanelText():
                    with html.Div(classes="d-flex ga-2"):
                        v3.VTextField(
                            label="Site model name",
                            v_model=("fbs_site_name",),
                            placeholder="site-date-time",
                            disabled=("fbs_adapting",),
                            density="compact",
                            hide_details=True,
                            id="fbs-site-name",
                        )
                        v3.VTextField(
                            label="Minutes",
                            v_model=("fbs_adapt_minutes",),
                            type="number",
                            min=0.1,
                            disabled=("fbs_adapting",),
                            density="compact",
                            hide_details=True,
                            style="flex: 0 0 90px;",
                            id="fbs-adapt-minutes",
                        )
                    with html.Div(classes="d-flex ga-2 mt-2"):
                        v3.VBtn(
                            "Improve",
                            title="Fine-tune a site model on the stacks whose brain segment you edited here",
                            click=self._on_improve_clicked,
                            id="fbs-improve",
                            disabled=("fbs_adapting || fbs_running",),
                        )
                        v3.VBtn(
                            "Cancel", click=self.cancel_improve, id="fbs-improve-cancel", disabled=("!fbs_adapting",)
                        )
                    v3.VProgressLinear(model_value=("fbs_adapt_progress",), height=6, classes="my-2")
                    html.Div("{{ fbs_adapt_status }}", id="fbs-adapt-status", classes="text-caption")

    def _build_ownership(self):
        """The server holds one stack, one run and one scene for every tab that opens it: a second tab
        says so and stays out of the way, unless its user takes over (the first tab then says so)."""
        claim, release = self.server.trigger_name(self.claim), self.server.trigger_name(self.release)
        answer = self.server.trigger_name(self.answer)
        client.ClientTriggers(
            mounted=f"fbs_me = Math.random().toString(36).slice(2); trame.trigger('{claim}', [fbs_me, false])",
            exit=f"trame.trigger('{release}', [fbs_me])",
        )
        client.ClientStateChange(
            value="fbs_owner_ping",
            change=f"fbs_owner === fbs_me && trame.trigger('{answer}', [fbs_me, fbs_owner_ping])",
        )
        with v3.VOverlay(  # only once the working tab has answered (claim): a reloaded tab takes over without it
            model_value=("fbs_owner !== '' && fbs_owner !== fbs_me && fbs_waiting.includes(fbs_me)",),
            persistent=True,
            classes="align-center justify-center",
            id="fbs-elsewhere",
        ):
            with v3.VCard(max_width=460, classes="pa-4"):
                v3.VCardTitle("FetalBrainSeg is open in another tab")
                v3.VCardText(
                    "This server shows one stack, one run and one set of edits to every tab or browser that opens "
                    "it, so one works at a time. Use the other tab, or take over here: that tab then waits, and "
                    "nothing of its work is lost."
                )
                v3.VBtn(
                    "Use it here",
                    color="primary",
                    id="fbs-take-over",
                    click=f"trame.trigger('{claim}', [fbs_me, true])",
                )


def serve(
    library: StackLibrary,
    host: str = "127.0.0.1",
    port: int = 8080,
    device: str = "auto",
    logic: BrainSegmentationLogic | None = None,
    token: str | None = None,
    model: str = "",
) -> None:
    """Serve until Ctrl+C; with a `token`, only to browsers that hold it (see access.py). One line says where,
    once the server listens: trame's own lines would name the URL without its token."""
    app = WebApp(library, logic, device, model=model)
    query = ""
    if token:
        protect(app.server, token)
        query = f"?token={token}"
    url = f"http://{host}:{port}/{query}"
    app.server.controller.on_server_ready.add(
        lambda **_: print(f"FetalBrainSeg web app: {url}  (Ctrl+C to stop)", flush=True)
    )
    app.server.start(host=host, port=port, open_browser=False, show_connection_info=False)
