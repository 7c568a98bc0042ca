"""Keeping the data of a Hugging Face Space across restarts without an external database: a
scheduled backup of the SQLite file and its exports to a dataset repo (huggingface_hub's
CommitScheduler), restored at start.

Spaces have no persistent disk, and their bucket volumes lack the file locking SQLite needs, so
the database lives on the Space's ephemeral disk; every `backup_every` minutes a consistent
snapshot (SQLite's online backup) and the exports are committed to the repo when they changed.
At start, with no local database yet, the last snapshot is downloaded. Data written after the
last backup is lost on a restart; PostgreSQL (REFINE_DATABASE_URL) loses nothing.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import CommitScheduler, hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from sqlalchemy import Engine

from db.app_queries import snapshot_sqlite, write_exports
from refine.settings import Settings

log = logging.getLogger(__name__)
DB_FILE = "refine.db"
EXPORTS = "exports"


def on_space() -> bool:
    """Whether this process runs on a Hugging Face Space (which sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def persistence_warning(settings: Settings) -> str | None:
    """The banner a Space shows when collected data will not survive a restart."""
    if not on_space() or settings.database_url or settings.backup_repo:
        return None
    return ("⚠️ **Votes and feedback collected here are lost when this Space restarts.** The operator can keep "
            "them with `REFINE_DATABASE_URL` (PostgreSQL) or a scheduled backup to a dataset repo "
            "(`REFINE_BACKUP_REPO` + a write token).")


def backup_token(settings: Settings) -> str | None:
    """The token for the backup repo: REFINE_BACKUP_TOKEN, else HF_TOKEN."""
    return settings.backup_token.get_secret_value() if settings.backup_token else os.environ.get("HF_TOKEN")


def stage_snapshot(engine: Engine, folder: Path) -> list[str]:
    """Put a snapshot of the database (`refine.db`) and its exports (`exports/…`) into `folder`.
    Files whose content did not change are left alone (the scheduler uploads files by mtime);
    returns the paths (relative to `folder`) that changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".staging-") as tmp:
        staging = Path(tmp)
        snapshot_sqlite(engine, staging / DB_FILE)
        write_exports(engine, staging / EXPORTS)
        for new in sorted(p for p in staging.rglob("*") if p.is_file()):
            rel = new.relative_to(staging)
            target = folder / rel
            if target.exists() and filecmp.cmp(new, target, shallow=False):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(new, target)
            changed.append(rel.as_posix())
    return changed


class BackupScheduler(CommitScheduler):
    """A CommitScheduler that stages a fresh snapshot of the database before each upload."""

    def __init__(self, *, engine: Engine, **kwargs: Any) -> None:
        self.engine = engine  # set first: the scheduler's thread pushes at once
        super().__init__(**kwargs)

    def push_to_hub(self) -> Any:
        with self.lock:
            changed = stage_snapshot(self.engine, self.folder_path)
        if changed:
            log.info("backup: %d changed file(s) to upload", len(changed))
        return super().push_to_hub()


def start_backup(settings: Settings, engine: Engine, folder: Path, *, hf_api: Any = None) -> BackupScheduler:
    """Start the scheduled backup of `engine`'s SQLite file to `settings.backup_repo` (a private
    dataset repo, created if missing), staged in `folder`. `hf_api` replaces the Hub client
    (tests pass an offline stand-in)."""
    assert settings.backup_repo
    scheduler = BackupScheduler(engine=engine, repo_id=settings.backup_repo, repo_type="dataset",
                                folder_path=folder, every=settings.backup_every, private=True,
                                token=backup_token(settings), hf_api=hf_api)
    log.info("backing up the database to dataset %s every %g min", settings.backup_repo, settings.backup_every)
    return scheduler


Download = Callable[..., str]


def restore(settings: Settings, db_file: Path, *, download: Download = hf_hub_download) -> bool:
    """Before the database is opened: with no local database file yet, fetch the last backup
    from `settings.backup_repo`. Returns True when a backup was restored.

    A repo without a backup yet means a first start (False). Any other failure (network, auth)
    raises: starting empty would let the next backup overwrite the real data."""
    assert settings.backup_repo
    if db_file.exists() and db_file.stat().st_size > 0:
        log.info("backup: keeping the existing database %s", db_file)
        return False
    try:
        fetched = download(repo_id=settings.backup_repo, filename=DB_FILE, repo_type="dataset",
                           token=backup_token(settings))
    except (RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):  # not offline/network
        log.info("backup: no backup in %s yet; starting with an empty database", settings.backup_repo)
        return False
    db_file.parent.mkdir(parents=True, exist_ok=True)
    partial = db_file.with_name(db_file.name + ".restoring")
    shutil.copyfile(fetched, partial)
    os.replace(partial, db_file)
    log.info("backup: restored %s from %s", db_file, settings.backup_repo)
    return True
