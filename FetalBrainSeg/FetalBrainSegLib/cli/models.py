"""`models` (site models and the network registry), `info` and `demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .common import (
    add_model_options,
    make_segmenter,
)


def add_info(commands) -> None:
    p = commands.add_parser("info", help="a weights file's model, size, cost and training record")
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    p.set_defaults(run=_info)


def _info(args) -> int:
    from ..models.complexity import count_macs, count_parameters
    from ..models.file_format import weights_file
    from ..models.weights import load_weights
    from ..resources import default_weights_path

    path = weights_file(Path(args.weights or default_weights_path()))  # the file read: the shipped one is ONNX
    model, meta = load_weights(path)
    training = meta.get("training", {})
    print(
        f"weights: {path}\nmodel: {meta['model']} {meta['model_options'] or ''}\n"
        f"trainable parameters: {count_parameters(model):,}\n"
        f"MACs per 256x256 slice: {count_macs(model) / 1e9:.3f} G ({2 * count_macs(model) / 1e9:.2f} GFLOPs)\n"
        f"preprocessing: {meta['preprocessing']}"
    )
    for key in ("epoch", "step", "git_revision", "val_stacks"):
        if key in training:
            print(f"training {key}: {training[key]}")
    return 0


def add_models(commands) -> None:
    p = commands.add_parser(
        "models", help="site models (export, import) and the network registry: parameters and GFLOPs beside the paper's"
    )
    p.add_argument("-o", "--output", type=Path, default=None, help="also write the registry to this Markdown file")
    p.add_argument("--sites-only", action="store_true", help="list the site models only")
    p.add_argument("--export", nargs=2, metavar=("NAME", "FILE"), help="write a site model to one file")
    p.add_argument("--import", dest="import_file", type=Path, metavar="FILE", help="add an exported site model")
    p.add_argument("--name", default=None, help="with --import: the name to add it under (default: its own)")
    p.set_defaults(run=_models)


def _models(args) -> int:
    from ..engine.site_models import export_site_model, import_site_model, list_site_models

    if args.export:
        print(f"wrote {export_site_model(args.export[0], Path(args.export[1]))}")
        return 0
    if args.import_file:
        imported = import_site_model(args.import_file, args.name)
        print(f"imported site model {imported.name}: {imported.path}")
        return 0
    sites = list_site_models()
    print("Site models (fetalbrainseg adapt; use with --model NAME):")
    for site in sites:
        record = site.site
        print(
            f"  {site.name}: {record['modality']}, from {len(record['stacks'])} corrected stack(s), "
            f"{record['steps']} steps in {record['minutes']:.1f} min; held-out Dice {record['held_out_before']:.3f} "
            f"-> {record['held_out_after']:.3f}; base {Path(record['base']).name}"
        )
    if not sites:
        print("  none yet")
    if args.sites_only:
        return 0
    try:
        import torch  # noqa: F401  (the registry builds networks)
    except ImportError:
        print("(the network registry needs PyTorch)")
        return 0
    print()
    return _network_registry(args)


def _network_registry(args) -> int:
    """The registry's networks with their size and cost (the paper's comparison networks and counts:
    python -m experiments.models_table)."""
    from ..models.complexity import count_macs, count_parameters
    from ..models.registry import MODELS, build_model
    from ..provenance import provenance_markdown

    lines = ["| model | parameters | GFLOPs (2 x MACs, 256x256) |", "|---|---|---|"]
    for name in sorted(MODELS):
        model = build_model(name)
        lines.append(f"| {name} | {count_parameters(model):,} | {2 * count_macs(model) / 1e9:.2f} |")
    table = "\n".join(lines) + "\n\n" + provenance_markdown()
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("# Model registry\n\n" + table)
    return 0


def add_demo(commands) -> None:
    p = commands.add_parser("demo", help="segment the public CC0 sample stack and write a PNG montage")
    p.add_argument("--input", type=Path, default=None, help="a stack to use instead of downloading the sample")
    p.add_argument("-o", "--out-dir", type=Path, default=Path("fetalbrainseg-demo"), help="default: %(default)s")
    p.add_argument("--overwrite", action="store_true", help="replace this folder's earlier demo outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--url", default=None, help=argparse.SUPPRESS)  # tests serve the sample locally
    add_model_options(p)
    p.set_defaults(run=_demo)


def _demo(args) -> int:
    from .. import samples
    from ..engine.outputs import mask_path_for, output_problem
    from ..engine.volume_io import VolumeError, strip_suffix
    from ..evaluation.montage import montage, write_png

    try:
        image = args.input or samples.fetch_sample(args.url)
    except samples.DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    output = mask_path_for(image, args.out_dir)
    picture = args.out_dir / f"{strip_suffix(image)}_montage.png"
    for path in (output, picture):
        problem = output_problem(path, {image.resolve()}, set(), args.overwrite)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
    try:
        from ..engine.cohort import segment_to_file

        volume, result = segment_to_file(make_segmenter(args), image, output, progress=not args.quiet)
    except (VolumeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    axis = result.slice_axis
    write_png(picture, montage(np.moveaxis(volume.data, axis, 0), np.moveaxis(result.mask, axis, 0)))
    brain = int(np.moveaxis(result.mask, axis, 0).reshape(result.num_slices, -1).any(axis=1).sum())
    print(
        f"{image.name}: brain found on {brain} of {result.num_slices} slices in {result.seconds:.2f} s\n"
        f"mask: {output}\nmontage: {picture}"
    )
    return 0
