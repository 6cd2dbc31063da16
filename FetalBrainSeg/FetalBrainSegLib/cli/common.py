"""What the commands share: options, the segmenter they build, ports, the engine's words as flags."""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict, fields
from pathlib import Path

DEFAULT_MANIFEST = Path("..") / "shared" / "data" / "fetal-mri" / "manifest.csv"
SPLITS = ("train", "test", "unlabelled", "validation")  # evaluate's: the manifest's, and the weights' own
INTERRUPTED = "interrupted: no mask was half-written; finished masks are kept"  # commands that write masks


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535 (0 and beyond 65535 failed later with OverflowError)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number: use 1-65535")
    return port


def port_in_use(host: str, port: int) -> str:
    """Why `port` on `host` cannot be listened on ("" when it can), found by binding it for a moment."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"
    return ""


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --model-option expects KEY=VALUE, not {pair!r}")
        options[key] = value
    return options


def add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")


def add_weights_and_device(p: argparse.ArgumentParser) -> None:
    from ..engine.inference import SegmenterOptions

    add_weights(p)
    add_settings(p, SegmenterOptions, skip=tuple(f.name for f in fields(SegmenterOptions) if f.name != "device"))


def add_model_options(p: argparse.ArgumentParser, whole_stacks: bool = True) -> None:
    """The model and the segmenter's options (engine/inference.py SegmenterOptions); slice by slice, those of
    whole stacks only are left out and the zoom is fixed (1 unless given)."""
    from ..engine.inference import SLICE_BY_SLICE_VALUES, SegmenterOptions

    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="a site model made by `fetalbrainseg adapt`, or a network of the registry: its shipped weights, or "
        "checked against --weights (fetalbrainseg models lists both)",
    )
    add_weights(p)
    if whole_stacks:
        add_settings(p, SegmenterOptions)
    else:
        add_settings(p, SegmenterOptions, skip=tuple(SLICE_BY_SLICE_VALUES), defaults={"zoom": "1"})


def segmenter_recipe(args):
    """Segmenter with the weights and options the arguments name, as a picklable partial (worker
    processes build their own from it)."""
    import functools

    from ..engine.inference import SLICE_BY_SLICE_VALUES, Segmenter, SegmenterOptions
    from ..engine.site_models import site_model_path
    from ..resources import default_weights_path

    weights = args.weights
    if args.model and weights is None and site_model_path(args.model).is_file():
        weights = site_model_path(args.model)
    elif args.model and weights is None:
        weights = default_weights_path(args.model)
        if not weights.is_file() and not weights.with_suffix(".onnx").is_file():
            # only here, as the registry needs PyTorch and shipped weights run without it
            from ..models.registry import build_model

            build_model(args.model)  # an unknown name fails here, with the registry's names
            raise ValueError(
                f"no shipped weights for {args.model} (only rfbsnet ships, and no site model has that name); "
                f"train them with `fetalbrainseg train --model {args.model} -o runs/{args.model}` and pass "
                f"--weights runs/{args.model}/best.pt"
            )
    slice_by_slice = {} if hasattr(args, "batch_size") else SLICE_BY_SLICE_VALUES
    return functools.partial(Segmenter, weights, **asdict(settings_from(SegmenterOptions, args, **slice_by_slice)))


def check_model_name(args, weights, record: dict) -> None:
    """--model names a network: the weights must hold that network (a site model holds its base's)."""
    from ..engine.site_models import site_record

    held = record["model"]
    if args.model and site_record(record) is None and held != args.model.lower():
        raise ValueError(f"{weights} holds a {held} network, not {args.model}")


def make_segmenter(args):
    recipe = segmenter_recipe(args)
    segmenter = recipe()
    check_model_name(args, recipe.args[0], segmenter.metadata)
    return segmenter


def checked_recipe(args):
    """segmenter_recipe(args), every setting checked as make_segmenter would, but without loading the model:
    for a parent whose workers each load their own."""
    from ..engine.inference import SegmenterOptions
    from ..engine.weights_record import weights_record

    recipe = segmenter_recipe(args)
    SegmenterOptions(**recipe.keywords).check(recipe.args[0])
    if args.model:  # then the weights are named (a site model, or the network's shipped weights)
        check_model_name(args, recipe.args[0], weights_record(recipe.args[0]))
    return recipe


# The engine speaks of its settings (precision int8, the openvino backend, device cuda); here they are flags.
_FLAG_WORDS = [
    (re.compile(r"\bthe (\w+) or (\w+) backend\b"), r"--backend \1 or \2"),
    (re.compile(r"\bthe (torch|onnxruntime|openvino) backend\b"), r"--backend \1"),
    (re.compile(r"\bprecision (fp32|bf16|int8)\b"), r"--precision \1"),
    (re.compile(r"\bdevice (auto|cpu|cuda)\b"), r"--device \1"),
]


def in_flag_words(message: str) -> str:
    for pattern, flag in _FLAG_WORDS:
        message = pattern.sub(flag, message)
    return message


def add_settings(p: argparse.ArgumentParser, settings_class, skip: tuple = (), defaults: dict | None = None) -> None:
    """An option for each field of `settings_class` declared with settings.setting (but those in `skip`), from its
    default (or the one `defaults` gives) and metadata: --NAME (or its `flag`), a list for a tuple, --no-NAME for a
    default of True."""
    for item in fields(settings_class):
        if "help" not in item.metadata or item.name in skip:
            continue
        option = dict(item.metadata)
        help_text, flag = option.pop("help"), option.pop("flag", _flag(item.name))
        default = (defaults or {}).get(item.name, item.default)
        if isinstance(default, bool):
            negated = f"--no-{flag[2:]}" if default else flag
            p.add_argument(negated, dest=item.name, action="store_false" if default else "store_true", help=help_text)
        elif isinstance(default, tuple):
            kind = option.pop("type", None) or type(default[0])
            option.setdefault("nargs", "+")
            p.add_argument(flag, dest=item.name, type=kind, default=list(default), help=help_text, **option)
        else:
            p.add_argument(flag, dest=item.name, type=type(default), default=default, help=help_text, **option)


def settings_from(settings_class, args: argparse.Namespace, **given):
    """`settings_class` from the options add_settings made (lists back to tuples), and the fields `given`."""
    offered = [item.name for item in fields(settings_class) if "help" in item.metadata and item.name not in given]
    offered = [name for name in offered if hasattr(args, name)]  # the others keep their declared defaults
    values = {name: getattr(args, name) for name in offered}
    return settings_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}, **given)


def settings_options(settings_class, **values) -> list[str]:
    """The options that set these fields of `settings_class`, as add_settings offers them (for scripts that start
    runs)."""
    declared = {item.name: item for item in fields(settings_class)}
    words = []
    for name, value in values.items():
        item = declared[name]
        flag = item.metadata.get("flag", _flag(name))
        if isinstance(value, bool):
            words += [] if value == item.default else [flag if value else f"--no-{flag[2:]}"]
        else:
            words += [flag, *map(str, value if isinstance(value, (tuple, list)) else [value])]
    return words


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
