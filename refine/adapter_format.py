"""The CnR format an adapter was trained on, recorded in its folder (`cnr_format.json`:
`{"format": "edits", "version": "edits-v1"}`) so the loop prompts and parses the way the
adapter learned. A folder without the file predates it and was trained on `rewrite` cnr-v1."""

from __future__ import annotations

import json
from pathlib import Path

from refine.cnr_format import FORMAT_VERSIONS, CnRFormat
from refine.errors import RefineError

FORMAT_FILE = "cnr_format.json"


class AdapterFormatError(RefineError):
    """The adapter was trained on a CnR format (or format version) this code does not know."""


def write_adapter_format(folder: str | Path, fmt: CnRFormat) -> Path:
    """Record `fmt` and its current version in `folder`; returns the file written."""
    path = Path(folder) / FORMAT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": fmt, "version": FORMAT_VERSIONS[fmt]}) + "\n", encoding="utf-8")
    return path


def read_adapter_format(folder: str | Path) -> CnRFormat:
    """The format recorded in an adapter folder ("rewrite" when the folder has no record).

    Raises AdapterFormatError, one sentence naming the file, when the record is unreadable or
    names a format or version this code does not know."""
    path = Path(folder) / FORMAT_FILE
    if not path.is_file():
        return "rewrite"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fmt, version = data["format"], data["version"]
    except (ValueError, KeyError, TypeError):
        raise AdapterFormatError(f'{path}: not a format record (expected {{"format": …, "version": …}})') from None
    if FORMAT_VERSIONS.get(fmt) != version:
        known = ", ".join(f"{f} {v}" for f, v in FORMAT_VERSIONS.items())
        raise AdapterFormatError(
            f"{path}: the adapter was trained on CnR format {fmt!r} version {version!r}, which this version of "
            f"Refine does not know (it knows {known}); use a matching Refine or retrain the adapter")
    return fmt
