"""`serve` (the web app) and `stream` (slices from a scanner, answered as they come)."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import (
    add_model_options,
    add_weights_and_device,
    make_segmenter,
    port_in_use,
    port_number,
)


def add_serve(commands) -> None:
    p = commands.add_parser("serve", help="the segment-review-edit-export workflow in a web browser (trame-slicer)")
    p.add_argument("stacks", nargs="*", type=Path, help="stacks (files) and folders of stacks to offer")
    p.add_argument(
        "-o",
        "--out-dir",
        type=Path,
        default=Path("fetalbrainseg-exports"),
        help="exports go into this folder (or folders inside it); default: %(default)s",
    )
    p.add_argument("--port", type=port_number, default=8080, help="default: %(default)s")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: this machine only); any other requires the access token "
        "printed with the URL",
    )
    p.add_argument(
        "--require-token",
        action="store_true",
        help="require the access token on loopback too (a shared machine, an SSH tunnel)",
    )
    add_weights_and_device(p)
    p.add_argument("--model", default=None, metavar="NAME", help="a site model made by `fetalbrainseg adapt`")
    p.add_argument(
        "--max-upload-mb", type=float, default=500, help="largest stack accepted from the page (default: %(default)s)"
    )
    p.set_defaults(run=_serve, interrupted="interrupted: the web app stopped; exported masks are kept")


def _serve(args) -> int:
    import os

    if not args.stacks:
        print("error: name the stacks or folders of stacks to offer", file=sys.stderr)
        return 2
    if problem := port_in_use(args.host, args.port):  # before any URL is printed as if the app were up
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # pip's VTK renders offscreen through EGL (Mesa), so no display is needed
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        from ..engine.inference import Segmenter
        from ..slicer.logic import BrainSegmentationLogic
        from ..web.app import serve
    except ImportError as exc:
        print(f"error: the web app needs trame-slicer ({exc}); pip install 'fetalbrainseg[web]'", file=sys.stderr)
        return 1
    from ..web.library import StackLibrary

    try:
        library = StackLibrary(args.stacks, args.out_dir, args.max_upload_mb)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..engine.outputs import output_folder_problem

    if problem := output_folder_problem(library.out_dir):  # before any work that Export could not save
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from ..web.access import LOOPBACK, new_token

    token = new_token() if args.require_token or args.host not in LOOPBACK else None
    if token and args.host not in LOOPBACK:
        print(
            f"note: listening on {args.host}: only browsers opening the URL below (it holds the access token) "
            "can read the offered stacks and write into the output folder",
            file=sys.stderr,
        )
    from ..engine.site_models import resolve_model

    if args.model:
        resolve_model(args.model)  # an unknown name fails here, with the names there are

    def segmenter(weights=args.weights, **options):  # the panel's Model list passes a site model's weights
        return Segmenter(weights, **options)

    serve(library, args.host, args.port, args.device, BrainSegmentationLogic(segmenter), token, args.model or "")
    return 0


def add_stream(commands) -> None:
    p = commands.add_parser(
        "stream",
        help="segment slices as a scanner sends them, over OpenIGTLink (real time, head tracking)",
        description="Receive OpenIGTLink IMAGE messages (a slice or a few, with their IJK-to-world matrix) and "
        "answer every slice, in order, stamped with its message's timestamp: the mask as an IMAGE on the same "
        "geometry (<device>_brainmask), the brain centroid as a TRANSFORM (<device>_brain, when brain was found) "
        "and a JSON STRING with the bounding box, review flag and queue depth (<device>_review). A new device "
        "name or in-plane geometry starts a new series. Slicer's OpenIGTLinkIF connects to it as a client.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--listen", type=port_number, metavar="PORT", help="wait for a sender on this port (Slicer: 18944)"
    )
    where.add_argument("--connect", metavar="HOST:PORT", help="connect to a sender that listens (reconnects)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="with --listen, the address to listen on (default: this machine only); another exposes the model "
        "to the network",
    )
    add_model_options(p, whole_stacks=False)
    p.set_defaults(run=_stream, interrupted="interrupted: the stream stopped; no file was written")


def _stream(args) -> int:
    try:
        from ..scanner.link import ScannerLink
    except ImportError as exc:
        print(f"error: streaming over OpenIGTLink needs pyigtl ({exc}); pip install 'fetalbrainseg[scanner]'",
              file=sys.stderr)  # fmt: skip
        return 2
    from ..engine.streaming import StreamingSegmenter

    if args.connect:
        host, _, port = args.connect.rpartition(":")
        if not host or not port.isdigit():
            print(f"error: --connect needs HOST:PORT, not {args.connect!r}", file=sys.stderr)
            return 2
        connect, port = True, int(port)
    else:
        host, port, connect = args.host, args.listen, False
    streaming = StreamingSegmenter(make_segmenter(args))
    try:
        link = ScannerLink(streaming, port, host, connect, log=lambda line: print(line, file=sys.stderr, flush=True))
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    link.serve_forever()
    return 0
