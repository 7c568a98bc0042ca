"""One clear sentence for every input and setting error.

Every command of `python -m refine` and `python app.py` runs under `ExplainErrors`: an
exception that escapes a command becomes one line on stderr, `Error: <sentence>`, and exit
status 1 — never a traceback. The sentence names the file and line, or the setting, and what to
do (see docs/errors.md). `--debug` (a flag of the command group) or `REFINE_DEBUG=1` prints the
traceback first.

Errors whose message is already that sentence derive from `RefineError`; `explain` words the
others (missing or unwritable paths, invalid settings, anything unexpected).

This module is imported by the CLI before any command runs: it imports nothing heavy.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

DEBUG_ENV = "REFINE_DEBUG"


class RefineError(Exception):
    """An error in the user's input or settings; its message is the sentence to show."""


class FileProblem(RefineError, ValueError):
    """A problem at one place of a user's file: `path:line: reason`, or `path: reason`."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


def debug_enabled() -> bool:
    """Whether tracebacks are wanted (`--debug` or REFINE_DEBUG=1)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def first_line(text: object) -> str:
    """The first non-empty line of a message (driver and library errors run on for lines)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def setting_names(field: str) -> str:
    """How a Settings field is set: `REFINE_ROUNDS (--rounds)`."""
    return f"REFINE_{field.upper()} (--{field.replace('_', '-')})"


def settings_problem(exc: Any) -> str:
    """The sentence for a pydantic ValidationError of the Settings."""
    parts = []
    for e in exc.errors():
        field = ".".join(str(p) for p in e["loc"])
        message = str(e["msg"]).removeprefix("Value error, ")
        shown = repr(e.get("input")) if field and not isinstance(e.get("input"), dict) else None
        where = f"{setting_names(field)}={shown}" if shown is not None else setting_names(field) if field else "settings"
        parts.append(f"{where}: {message}")
    return "invalid setting " + "; ".join(parts) + "; fix it in the environment, .env or on the command line"


def _os_problem(exc: OSError) -> str:
    path = str(exc.filename)
    if isinstance(exc, FileNotFoundError):
        parent = Path(path).parent
        if not parent.exists():
            return f"{path}: the folder {parent} does not exist; create it or choose another path"
        return f"{path}: no such file; check the path"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder, not a file; give a file path"
    if isinstance(exc, NotADirectoryError):
        return f"{path}: part of this path is a file, not a folder; choose another path"
    if isinstance(exc, PermissionError):
        return f"{path}: permission denied; choose a path you may read (input) or write (output)"
    if exc.errno == errno.EROFS:
        return f"{path}: the file system is read-only; choose a writable path"
    if exc.errno == errno.ENOSPC:
        return f"{path}: no space left on the device; free some space or choose another path"
    return f"{path}: {exc.strerror or first_line(exc)}"


def explain(exc: BaseException) -> str:
    """One sentence for an exception that ended a command."""
    if isinstance(exc, RefineError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return _os_problem(exc)
    if isinstance(exc, OSError) and exc.errno is None and first_line(exc):
        return first_line(exc)  # raised by our code with its own message (e.g. "GGUF file not found: …")
    kind = type(exc).__name__
    if kind == "ValidationError" and getattr(exc, "title", None) == "Settings":
        return settings_problem(exc)
    if kind == "EmbeddedModelMissing" or any(c.__name__ == "BackendError" for c in type(exc).__mro__):
        return first_line(exc)
    if type(exc) is ValueError and first_line(exc):  # raised by our code with its reason (not a subclass)
        return first_line(exc)
    if isinstance(exc, UnicodeDecodeError):
        return (f"a file holds bytes that are not UTF-8 ({first_line(exc)}); save it as UTF-8 "
                "(rerun with --debug to see which file)")
    return (f"unexpected {kind}: {first_line(exc) or 'no message'}; rerun with --debug (or {DEBUG_ENV}=1) "
            "for the traceback, and report it if your input and settings look right")


def _print_traceback(exc: BaseException) -> None:
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


class DetailedError(click.ClickException):
    """A ClickException whose details (e.g. every bad line of a file) are printed before the one
    summary line, so the last line of the output is always `Error: <sentence>`."""

    def __init__(self, summary: str, details: list[str]) -> None:
        super().__init__(summary)
        self.details = details

    def show(self, file: Any = None) -> None:
        for line in self.details:
            click.echo(line, err=True)
        super().show(file)


def _detailed(exc: BaseException | None) -> BaseException | None:
    """The first exception in a chain of causes that carries details and a summary."""
    seen = 0
    while exc is not None and seen < 10:
        if getattr(exc, "details", None) and getattr(exc, "summary", None):
            return exc
        exc, seen = exc.__cause__, seen + 1
    return None


def as_click(exc: BaseException, prefix: str = "") -> click.ClickException:
    """The ClickException to end a command with for an exception (see explain)."""
    detailed = _detailed(exc)
    if detailed is not None:
        return DetailedError(prefix + detailed.summary, list(detailed.details))  # type: ignore[attr-defined]
    return click.ClickException(prefix + explain(exc))


class ExplainErrors:
    """Mixin for click commands and groups: an exception escaping the command becomes
    `click.ClickException(explain(exc))` (exit status 1, one line), with the traceback first
    only under --debug / REFINE_DEBUG=1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except click.exceptions.ClickException as exc:
            if debug_enabled() and exc.__cause__ is not None:
                _print_traceback(exc.__cause__)
            if not isinstance(exc, DetailedError) and _detailed(exc.__cause__) is not None:
                raise as_click(exc.__cause__) from None  # type: ignore[arg-type]
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes one sentence
            if debug_enabled():
                _print_traceback(exc)
            raise as_click(exc) from None


class ExplainingCommand(ExplainErrors, click.Command):
    """A click command whose errors are explained (see ExplainErrors)."""


def enable_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """Callback of a `--debug` flag: tracebacks for this process (and what it starts)."""
    if value:
        os.environ[DEBUG_ENV] = "1"


DEBUG_OPTION = click.option("--debug", is_flag=True, is_eager=True, expose_value=False, callback=enable_debug,
                            help=f"Show the traceback of an error (same as {DEBUG_ENV}=1).")
