"""Settings declared once: a dataclass field with its default and, for those the command line offers, its help
(cli/common.py add_settings builds the options from these fields, settings_from the settings from the options)."""

from __future__ import annotations

from dataclasses import field


def setting(default, help: str, **option):
    """A field the command line offers as --NAME (underscores as dashes) unless `flag` names it otherwise;
    `option` holds argparse's metavar, choices or nargs, and `type` for a tuple that is empty by default.
    A default of True is offered as --no-NAME."""
    return field(default=default, metadata={"help": help, **option})
