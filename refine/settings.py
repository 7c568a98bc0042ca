"""All configuration in one place: environment variables with the `REFINE_` prefix, a `.env`
file, or keyword overrides (the CLI passes its flags as overrides)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BackendName = Literal["local", "tgi", "openai"]
# A Content-Security-Policy host source: optional scheme, optional "*." wildcard, host, optional port.
_IMAGE_HOST = re.compile(r"(https?://)?(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:\d{1,5})?")


class Settings(BaseSettings):
    """Refine's settings. Every field can be set as `REFINE_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="REFINE_", env_file=".env", extra="ignore")

    # The model that writes the first answer.
    base_backend: BackendName = "local"
    base_model: str = Field("", description="Local path, GGUF file, hub id or served model name; empty = embedded SmolLM2-135M-Instruct")
    base_url: str | None = Field(None, description="Server URL for the tgi/openai backends")
    base_api_key: SecretStr | None = Field(None, description="Bearer token for the base server (else HF_TOKEN / OPENAI_API_KEY)")

    # The critique-and-revise model.
    cnr_backend: BackendName = "local"
    cnr_model: str = Field("", description="Like base_model; empty = same as the base model")
    cnr_url: str | None = None
    cnr_api_key: SecretStr | None = None
    cnr_adapter: str | None = Field(None, description="PEFT adapter folder (local) or adapter id (tgi); empty = the shipped adapter; 'none' = no adapter")
    cnr_format: Literal["auto", "rewrite", "edits"] = Field(
        "auto", description="CnR format: rewrite = critique + whole revised answer; edits = critique + quoted-span "
        "edits; auto = what the local adapter folder records (cnr_format.json), else rewrite")
    cnr_mode: Literal["auto", "trained", "few-shot"] = Field(
        "auto", description="'few-shot' drives an untuned instruct model with examples; 'auto' = few-shot "
        "only for the embedded model without an adapter")
    tokenizer: str | None = Field(None, description="Tokenizer for the tgi backend's client-side chat template (default: the model)")

    # The refinement loop.
    rounds: int = Field(3, ge=1, le=10)
    stop_early: bool = True
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, ge=1, le=32768)
    cnr_max_new_tokens: int = Field(768, ge=1, le=32768)
    base_context: int | None = Field(None, ge=1, description="The base model's context window in tokens (caps the "
                                     "token sliders); empty = a local model's config or a TGI server's /info")
    cnr_context: int | None = Field(None, ge=1, description="The same for the critique-and-revise model")
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0, description="Local backend, CnR role: penalty on "
                                      "tokens the generation already wrote (the prompt is exempt, so a revision may copy the answer)")
    no_repeat_ngram_size: int = Field(0, ge=0, le=64, description="Local backend: forbid repeating any n-gram of this "
                                      "many tokens within the generation (0 = off)")

    # Accepting a revision (refine.acceptance) and selecting among candidates (refine.selection).
    accept_max_repeats: float = Field(5.0, ge=2.0, description="A unit of 3+ words repeated back to back this many "
                                      "times is a loop")
    accept_min_length_ratio: float | None = Field(None, ge=0.0, le=1.0, description="A revision with fewer words than "
                                                  "this share of a long answer's has collapsed (unless the critique asks "
                                                  "to cut); empty = 0.85 for the embedded 135M CnR model, 0.5 for any other")
    accept_collapse_min_words: int = Field(40, ge=0, description="Answers shorter than this many words may shrink freely")
    accept_min_similarity: float | None = Field(None, ge=0.0, le=1.0, description="A revision less similar than this "
                                                "to its input is a rewrite, rejected as drifted; empty = 0.3 for the "
                                                "embedded 135M CnR model, 0 (off) for any other")
    accept_forbid_new_repeats: bool | None = Field(None, description="Reject a revision in which an 8-word phrase "
                                                   "occurs more often than in its input; empty = on for the embedded "
                                                   "135M CnR model only")
    accept_unchanged_similarity: float = Field(1.0, gt=0.0, le=1.0, description="Word similarity at or above which a "
                                               "revision counts as unchanged")
    select: Literal["none", "judge"] = Field("none", description="'judge': a revision must also beat the current "
                                             "answer in the pairwise judge (both orders)")
    candidates: int = Field(1, ge=1, le=8, description="Revisions sampled per round; the selector keeps the best")
    judge_backend: BackendName = Field("local", description="Backend of the judge used by --select judge")
    judge_model: str = Field("", description="Judge model (like base_model); empty = embedded, NOT a meaningful judge")
    judge_url: str | None = Field(None, description="Server URL of the judge (tgi/openai)")
    judge_api_key: SecretStr | None = Field(None, description="Bearer token for the judge's server")

    # Backends.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    cache_dir: str | None = Field(None, description="Folder of Refine's caches: a GGUF model's dequantized weights "
                                  "are kept under gguf/ so later starts skip dequantizing; empty = "
                                  "$XDG_CACHE_HOME/refine or ~/.cache/refine; 'none' = no cache")
    timeout: float = Field(60.0, gt=0, description="Seconds to wait for the first or next token")
    connect_timeout: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0, le=10, description="Retries before the first token only")
    concurrency: int = Field(4, ge=1, le=256, description="Concurrent requests to remote backends")

    # Storage.
    database_url: str | None = Field(None, description="SQLAlchemy URL; empty = a SQLite file in the data folder")

    # The app (`python app.py`).
    host: str | None = Field(None, description="Address to serve on; empty = GRADIO_SERVER_NAME, else 127.0.0.1")
    port: int | None = Field(None, ge=1, le=65535, description="Port; empty = GRADIO_SERVER_PORT, else 7860")
    share: bool = Field(False, description="Also open a public gradio.live link")
    admin_token: SecretStr | None = Field(None, description="Unlocks the Data tab (exports); empty = no Data tab")
    run_history: bool = Field(False, description="Let Gradio keep each user's inputs and outputs in their "
                              "browser's localStorage (its run history page)")
    voter_salt: SecretStr | None = Field(None, description="Salt of the voter pseudonyms stored with votes and feedback")
    backup_repo: str | None = Field(None, description="Hugging Face dataset repo for the scheduled SQLite backup "
                                    "(opt-in; restored at start)")
    backup_token: SecretStr | None = Field(None, description="Token with write access to backup_repo (else HF_TOKEN)")
    backup_every: float = Field(10.0, gt=0, description="Minutes between backups")

    # Limits of the app for one visitor (a client address; see proxy_hops), for a public Space.
    visitor_turns_per_minute: int = Field(6, ge=0, description="Turns (send, regenerate) a visitor may start "
                                          "per minute; 0 = no limit")
    visitor_concurrent_turns: int = Field(1, ge=0, description="Turns of one visitor running or waiting at "
                                          "once; 0 = no limit")
    visitor_max_new_tokens: int = Field(1024, ge=1, le=32768, description="Most new tokens a visitor may ask "
                                        "for, per answer and per critique + revision")
    visitor_max_rounds: int = Field(5, ge=1, le=10, description="Most critique-and-revise rounds a visitor may "
                                    "ask for per turn")
    visitor_requests_per_minute: int = Field(60, ge=0, description="Other requests (new chat, votes, feedback, "
                                             "statistics, exports) a visitor may make per minute; 0 = no limit")
    admin_max_failures: int = Field(5, ge=1, description="Wrong admin tokens a visitor may enter before the "
                                    "Data tab locks them out")
    admin_lockout_minutes: float = Field(15.0, gt=0, description="How long that lockout lasts")
    export_ttl_minutes: float = Field(10.0, gt=0, description="Minutes an export's download links work (each "
                                      "file downloads once; the files are deleted after)")
    queue_size: int = Field(64, ge=1, description="Events that may wait in Gradio's queue at once; more are "
                            "refused with 'queue is full'")
    proxy_hops: int | None = Field(None, ge=0, le=8, description="Proxies in front of the app whose "
                                   "X-Forwarded-For is trusted to name the visitor; empty = 1 on a Hugging "
                                   "Face Space, else 0 (the peer address)")
    allowed_image_hosts: str = Field("", description="Comma-separated hosts (e.g. 'https://upload.wikimedia.org') "
                                     "whose images in answers may load; empty = no remote image loads")

    @field_validator("allowed_image_hosts")
    @classmethod
    def _image_hosts(cls, value: str) -> str:
        for host in (h.strip() for h in value.split(",")):
            if host and not _IMAGE_HOST.fullmatch(host):
                raise ValueError(f"{host!r} is not a host such as 'https://images.example.org' or "
                                 "'*.example.org'")
        return value

    @property
    def image_hosts(self) -> tuple[str, ...]:
        """The hosts of allowed_image_hosts, as Content-Security-Policy sources."""
        return tuple(h.strip() for h in self.allowed_image_hosts.split(",") if h.strip())

    @model_validator(mode="after")
    def _remote_needs_url(self) -> "Settings":
        if self.base_backend != "local" and not self.base_url:
            raise ValueError(f"base_backend={self.base_backend!r} needs REFINE_BASE_URL")
        shares_url = self.cnr_backend == self.base_backend and self.base_url
        if self.cnr_backend != "local" and not (self.cnr_url or shares_url):
            raise ValueError(f"cnr_backend={self.cnr_backend!r} needs REFINE_CNR_URL")
        if self.select == "judge" and self.judge_backend != "local" and not self.judge_url:
            raise ValueError(f"judge_backend={self.judge_backend!r} needs REFINE_JUDGE_URL")
        return self
