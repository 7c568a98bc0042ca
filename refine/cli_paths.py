"""Output paths checked when the command line is read, before any work: a file whose folder is
missing or not writable, or a folder that cannot be created, is refused at once with the option
and what to do — not after minutes of loading or computing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


class OutputPath(click.Path):
    """A file to write (`folder=False`: its folder must exist and be writable), or a folder to
    create or write into (`folder=True`: created with its parents)."""

    name = "output path"

    def __init__(self, *, folder: bool = False, path_type: type = Path) -> None:
        super().__init__(file_okay=not folder, dir_okay=folder, writable=True, path_type=path_type)
        self.folder = folder

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        path = Path(converted)
        if self.folder:
            ancestor = _existing_ancestor(path.absolute())
            if not ancestor.is_dir():
                self.fail(f"{ancestor} is a file, so the folder {path} cannot be made there; choose another path",
                          param, ctx)
            if not os.access(ancestor, os.W_OK):
                self.fail(f"the folder {ancestor} is not writable, so {path} cannot be written; choose another path",
                          param, ctx)
            return converted
        parent = path.absolute().parent
        if not parent.exists():
            ancestor = _existing_ancestor(parent)
            if not ancestor.is_dir():
                self.fail(f"{ancestor} is a file, not a folder, so {path} cannot be written; choose another path",
                          param, ctx)
            self.fail(f"the folder {path.parent} does not exist; create it first, or choose another path", param, ctx)
        if not parent.is_dir():
            self.fail(f"{path.parent} is a file, not a folder; choose another path", param, ctx)
        if not path.exists() and not os.access(parent, os.W_OK):
            self.fail(f"the folder {path.parent} is not writable; choose another path", param, ctx)
        return converted


def int_list(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> list[int]:
    """Callback of an option holding comma-separated positive integers (e.g. `100,250,500`)."""
    numbers = []
    for part in filter(None, (p.strip() for p in (value or "").split(","))):
        if not part.isdigit() or int(part) < 1:
            raise click.BadParameter(f"{part!r} is not a positive whole number; give numbers like 100,250,500",
                                     ctx=ctx, param=param)
        numbers.append(int(part))
    return numbers


OUTPUT_FILE = OutputPath()
OUTPUT_FOLDER = OutputPath(folder=True)
