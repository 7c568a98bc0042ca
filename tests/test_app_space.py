"""Running as a Hugging Face Space, offline: the scheduled backup of the SQLite database to a
dataset repo (the real CommitScheduler, with a Hub client that commits into a local folder),
restoring it at start, the data-loss banner, and the embedded-model fallback."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

import app
from db import open_database
from db.store import record_turn
from refine import space_backup
from refine.settings import Settings


class OfflineHub:
    """Stands in for HfApi: commits land in `remote/` (a dataset repo's files), nothing leaves."""

    def __init__(self, remote: Path) -> None:
        self.remote = remote
        self.commits: list[list[str]] = []
        self.created: list[dict[str, Any]] = []

    def create_repo(self, repo_id: str, **kwargs: Any) -> Any:
        self.created.append({"repo_id": repo_id, **kwargs})
        return SimpleNamespace(repo_id=repo_id)

    def run_as_future(self, fn: Any, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            future.set_exception(exc)
        return future

    def create_commit(self, *, repo_id: str, repo_type: str, operations: list, **kwargs: Any) -> Any:
        paths = []
        for op in operations:
            target = self.remote / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            op.path_or_fileobj.seek(0)
            target.write_bytes(op.path_or_fileobj.read())
            paths.append(op.path_in_repo)
        self.commits.append(sorted(paths))
        return SimpleNamespace(oid=str(len(self.commits)))

    def download(self, *, repo_id: str, filename: str, **kwargs: Any) -> str:
        path = self.remote / filename
        if not path.exists():
            raise RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        return str(path)


def _settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, backup_repo="someone/refine-data", backup_every=60, **kw)


def _turn(engine: Any, prompt: str) -> int:
    return record_turn(engine, prompt=prompt, answer="an answer", model="m", backend="local")


def test_backup_commits_a_snapshot_and_exports_then_restore_brings_the_data_back(tmp_path: Path) -> None:
    hub = OfflineHub(tmp_path / "remote")
    engine = open_database(f"sqlite:///{tmp_path / 'space' / 'refine.db'}")
    _turn(engine, "first")
    scheduler = space_backup.start_backup(_settings(), engine, tmp_path / "space" / "backup", hf_api=hub)
    try:
        deadline = time.monotonic() + 10
        while not hub.commits and time.monotonic() < deadline:  # the scheduler pushes once at start
            time.sleep(0.02)
        assert hub.created == [{"repo_id": "someone/refine-data", "private": True, "repo_type": "dataset",
                                "exist_ok": True}]
        assert {"refine.db", "exports/preferences.jsonl", "exports/feedback.jsonl", "exports/turns.csv"} <= set(
            hub.commits[0])

        assert scheduler.trigger().result() is None  # nothing changed: no commit
        _turn(engine, "second")
        scheduler.trigger().result()
        assert "refine.db" in hub.commits[-1] and "exports/turns.csv" in hub.commits[-1]
        assert "exports/votes.csv" not in hub.commits[-1]  # unchanged files are not uploaded again
    finally:
        scheduler.stop()
        engine.dispose()

    restored = tmp_path / "restarted" / "refine.db"  # a restart: empty disk
    assert space_backup.restore(_settings(), restored, download=hub.download)
    with sqlite3.connect(restored) as connection:
        assert [p for (p,) in connection.execute("SELECT prompt FROM turns ORDER BY id")] == ["first", "second"]
    assert not space_backup.restore(_settings(), restored, download=hub.download)  # keeps an existing file


def test_restore_starts_empty_without_a_backup_but_refuses_to_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    hub = OfflineHub(tmp_path / "remote")
    assert not space_backup.restore(_settings(), tmp_path / "refine.db", download=hub.download)

    def offline(**kwargs: Any) -> str:
        raise LocalEntryNotFoundError("connection error")

    with pytest.raises(LocalEntryNotFoundError):  # starting empty would overwrite the backup later
        space_backup.restore(_settings(), tmp_path / "refine.db", download=offline)


def test_backup_token_comes_from_settings_else_hf_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert space_backup.backup_token(_settings()) == "hf_env"
    assert space_backup.backup_token(_settings(backup_token="hf_set")) == "hf_set"


def test_a_space_without_persistence_warns_and_keeps_sqlite_off_mounted_volumes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFINE_DATA_DIR", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert space_backup.persistence_warning(Settings(_env_file=None)) is None
    monkeypatch.setenv("SPACE_ID", "someone/refine")
    assert "lost when this Space restarts" in space_backup.persistence_warning(Settings(_env_file=None))
    assert space_backup.persistence_warning(Settings(_env_file=None, database_url="postgresql://db/x")) is None
    assert space_backup.persistence_warning(_settings()) is None
    assert app.database_url(Settings(_env_file=None)) == f"sqlite:///{Path('data/refine.db').resolve()}"


def test_without_the_embedded_package_the_app_falls_back_to_the_hub_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from refine import embedded

    def missing() -> Path:
        raise embedded.EmbeddedModelMissing("not installed")

    monkeypatch.setattr(embedded, "embedded_gguf", missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    settings = app.with_model_fallback(Settings(_env_file=None))
    assert settings.base_model == settings.cnr_model == app.HUB_MODEL
    has_adapter = embedded.SHIPPED_ADAPTER.exists()
    assert settings.cnr_adapter == (str(embedded.SHIPPED_ADAPTER) if has_adapter else "none")
    assert settings.cnr_mode == ("auto" if has_adapter else "few-shot")
    configured = Settings(_env_file=None, base_model="/models/x")
    assert app.with_model_fallback(configured).base_model == "/models/x"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(embedded.EmbeddedModelMissing):
        app.with_model_fallback(Settings(_env_file=None))
