"""Export downloads tied to the admin's session: each export is written to a private folder
(never Gradio's file cache, whose files anyone with the path may fetch for an hour) and offered
as links `refine-export/<key>/<file>` with an unguessable key. A file downloads once and is then
deleted; the links die and the folder is deleted when the session makes another export, when
its page is closed, or after REFINE_EXPORT_TTL_MINUTES, whichever comes first."""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
ROUTE = "refine-export"  # path prefix the PageGuard middleware serves the links under


@dataclass
class Grant:
    """One export: its folder, the files not yet downloaded, whose session asked, until when."""

    key: str
    session: str
    folder: Path
    files: dict[str, Path]
    expires: float
    timer: threading.Timer | None = field(default=None, repr=False)

    def links(self) -> dict[str, str]:
        """File name -> relative link (relative, so it works under any root path)."""
        return {name: f"{ROUTE}/{self.key}/{name}" for name in self.files}


class ExportStore:
    """The grants of one app (thread-safe: exports run in worker threads, downloads on the loop)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()

    def publish(self, session: str, folder: Path, files: list[Path]) -> Grant:
        """Offer `files` (inside `folder`) to `session`, ending its previous export."""
        self.revoke_session(session)
        grant = Grant(key=secrets.token_urlsafe(24), session=session, folder=folder,
                      files={f.name: f for f in files}, expires=time.monotonic() + self.ttl_s)
        grant.timer = threading.Timer(self.ttl_s, self._expire, [grant.key])
        grant.timer.daemon = True
        with self._lock:
            self._grants[grant.key] = grant
        grant.timer.start()
        return grant

    def take(self, key: str, name: str) -> Path | None:
        """The file to send for a link, or None (unknown, expired or already downloaded). The
        link stops working at once; call `served` once the file is sent."""
        with self._lock:
            grant = self._grants.get(key)
            if grant is None or time.monotonic() > grant.expires:
                return None
            return grant.files.pop(name, None)

    def served(self, key: str, path: Path) -> None:
        """Delete a sent file, and the export's folder once every file was downloaded."""
        path.unlink(missing_ok=True)
        with self._lock:
            grant = self._grants.get(key)
            finished = grant is not None and not grant.files
            if finished:
                del self._grants[key]
        if finished:
            assert grant is not None
            self._delete(grant)

    def revoke_session(self, session: str) -> None:
        """End every export of a session (its page was closed, or it exports again)."""
        with self._lock:
            ended = [g for g in self._grants.values() if g.session == session]
            for grant in ended:
                del self._grants[grant.key]
        for grant in ended:
            self._delete(grant)

    def close(self) -> None:
        """End every export (the app stops)."""
        with self._lock:
            ended = list(self._grants.values())
            self._grants.clear()
        for grant in ended:
            self._delete(grant)

    def active(self) -> int:
        with self._lock:
            return len(self._grants)

    def _expire(self, key: str) -> None:
        with self._lock:
            grant = self._grants.pop(key, None)
        if grant is not None:
            log.info("an export expired undownloaded; its files are deleted")
            self._delete(grant)

    @staticmethod
    def _delete(grant: Grant) -> None:
        if grant.timer is not None:
            grant.timer.cancel()
        shutil.rmtree(grant.folder, ignore_errors=True)
