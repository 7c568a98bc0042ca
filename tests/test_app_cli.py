"""`python app.py`: its options map to the settings, and a model that cannot load stops it with
one clear line instead of a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import app


def test_help_lists_the_options_that_map_to_settings() -> None:
    result = CliRunner().invoke(app.main, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--rounds", "--base-model", "--cnr-adapter", "--run-history",
                   "--backup-repo", "--database-url", "--concurrency"):
        assert option in result.output
    assert "REFINE_ADMIN_TOKEN" in result.output  # secrets: environment only


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def build(settings: object) -> None:
        seen["s"] = settings
        raise ValueError("stop here")

    monkeypatch.setenv("REFINE_ROUNDS", "5")
    monkeypatch.setenv("REFINE_PORT", "9000")
    monkeypatch.setattr(app, "build", build)
    result = CliRunner().invoke(app.main, ["--rounds", "2", "--run-history"])
    settings = seen["s"]
    assert (settings.rounds, settings.port, settings.run_history) == (2, 9000, True)
    assert result.exit_code == 1 and "cannot start: stop here" in result.output


def test_a_model_that_cannot_load_stops_the_app_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINE_DATABASE_URL", f"sqlite:///{tmp_path / 'refine.db'}")
    result = CliRunner().invoke(app.main, ["--base-model", str(tmp_path / "missing"), "--cnr-adapter", "none"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot start:") and "Traceback" not in result.output
