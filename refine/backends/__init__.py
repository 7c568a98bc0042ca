"""Building the base and CnR backends from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import SecretStr

from refine.adapter_format import read_adapter_format
from refine.backends.base import Backend, GenerationParams
from refine.cnr_format import CnRFormat
from refine.embedded import SHIPPED_ADAPTER
from refine.settings import Settings

log = logging.getLogger(__name__)
Role = Literal["base", "cnr"]


def _shares_base(settings: Settings) -> bool:
    return settings.cnr_backend == settings.base_backend


def cnr_model(settings: Settings) -> str:
    """The CnR model reference: its own, else the base model's on the same backend ('' = embedded)."""
    return settings.cnr_model or (settings.base_model if _shares_base(settings) else "")


def cnr_adapter(settings: Settings) -> str | None:
    """The adapter the CnR model uses: the configured one, 'none' for none, and by default the
    shipped adapter when the CnR model is the embedded default."""
    if settings.cnr_adapter:
        return None if settings.cnr_adapter.lower() == "none" else settings.cnr_adapter
    if settings.cnr_backend == "local" and not cnr_model(settings) and (SHIPPED_ADAPTER / "adapter_config.json").exists():
        return str(SHIPPED_ADAPTER)
    return None


def check_cnr_adapter(settings: Settings) -> None:
    """Refuse, before any model loads, a local CnR adapter folder that is missing, empty or made
    for another base model (refine.adapter_check); remote backends name adapters by id."""
    adapter = cnr_adapter(settings)
    if settings.cnr_backend == "local" and adapter:
        from refine.adapter_check import check_adapter

        check_adapter(adapter, cnr_model(settings))
        read_adapter_format(adapter)  # an unknown format is refused here, in one sentence


def cnr_few_shot(settings: Settings) -> bool:
    """Whether CnR prompts carry few-shot examples (an untuned instruct model)."""
    if settings.cnr_mode != "auto":
        return settings.cnr_mode == "few-shot"
    return settings.cnr_backend == "local" and not cnr_model(settings) and cnr_adapter(settings) is None


def cnr_format(settings: Settings) -> CnRFormat:
    """The CnR format prompts ask for and the loop parses: the setting, else (auto) the format
    the local adapter folder records, else `rewrite` (remote models, few-shot prompting).
    Raises AdapterFormatError for an adapter trained on a format this code does not know."""
    if settings.cnr_format != "auto":
        return settings.cnr_format
    adapter = cnr_adapter(settings)
    if settings.cnr_backend == "local" and adapter:
        return read_adapter_format(adapter)
    return "rewrite"


def generation_params(settings: Settings, role: Role) -> GenerationParams:
    """Sampling settings for a role. The repetition controls are the CnR role's (measured there:
    docs/acceptance.md); the base answer keeps plain decoding, its loops are stopped by the loop."""
    tokens = settings.max_new_tokens if role == "base" else settings.cnr_max_new_tokens
    params = GenerationParams(max_new_tokens=tokens, temperature=settings.temperature, top_p=settings.top_p)
    if role == "cnr":
        params = replace(params, repetition_penalty=settings.repetition_penalty,
                         no_repeat_ngram_size=settings.no_repeat_ngram_size)
    return params


@dataclass
class BackendPool:
    """Builds backends once and shares loaded local models between roles that use the same one
    (with and without the CnR adapter: see `backend`)."""

    settings: Settings

    def __post_init__(self) -> None:
        self._local: dict[tuple, object] = {}
        self._built: dict[Role, Backend] = {}

    def get(self, role: Role) -> Backend:
        """The backend for 'base' or 'cnr' (built on first use)."""
        if role not in self._built:
            self._built[role] = self._build(role)
        return self._built[role]

    def _build(self, role: Role) -> Backend:
        s = self.settings
        if role == "base":
            return self.backend(s.base_backend, s.base_model, url=s.base_url, api_key=s.base_api_key)
        check_cnr_adapter(s)
        shared = _shares_base(s)
        return self.backend(s.cnr_backend, cnr_model(s), url=s.cnr_url or (s.base_url if shared else None),
                            api_key=s.cnr_api_key or (s.base_api_key if shared else None), adapter=cnr_adapter(s))

    def backend(self, kind: str, model: str, *, url: str | None = None, api_key: SecretStr | None = None,
                adapter: str | None = None) -> Backend:
        """A backend of any kind (also used for judges); local models are loaded once per model
        and remote ones retry failures before their first token. A local model that the CnR role
        runs with its adapter is loaded once, adapter attached, and serves every role on that
        model: the others run on it with the adapter switched off."""
        s = self.settings
        if kind == "local":
            from refine.backends.local import LocalBackend, LocalModel

            attached = adapter or self._attached_adapter(model)
            key = (model, attached, s.dtype)
            if key not in self._local:
                log.info("loading local model %r (adapter %r)", model or "embedded", attached)
                self._local[key] = LocalModel(model, adapter=attached, dtype=s.dtype, cache_dir=s.cache_dir)
            return LocalBackend(self._local[key], adapter=adapter is not None)  # type: ignore[arg-type]
        if not url:
            raise ValueError(f"the {kind} backend needs a server URL")
        timeouts = {"timeout": s.timeout, "connect_timeout": s.connect_timeout}
        if kind == "tgi":
            from refine.backends.tgi import TGIBackend

            remote: Backend = TGIBackend(url, model=model, adapter_id=adapter, tokenizer=s.tokenizer,
                                         api_key=api_key, **timeouts)
        elif kind == "openai":
            from refine.backends.openai_compat import OpenAICompatBackend

            remote = OpenAICompatBackend(url, model=model, api_key=api_key, **timeouts)
        else:
            raise ValueError(f"unknown backend {kind!r}; choose local, tgi or openai")
        from refine.backends.retry import RetryingBackend

        return RetryingBackend(remote, retries=s.retries)

    def _attached_adapter(self, model: str) -> str | None:
        """The adapter a local model is loaded with when a role asks for it without one: the CnR
        role's adapter if the CnR role runs locally on this same model (so the base weights are
        loaded once), else none."""
        s = self.settings
        if s.cnr_backend != "local" or cnr_model(s) != model:
            return None
        adapter = cnr_adapter(s)
        if adapter:
            check_cnr_adapter(s)  # said before loading, also when the base role loads it first
        return adapter

    async def aclose(self) -> None:
        """Close every backend and stop the local models' workers."""
        for backend in self._built.values():
            await backend.aclose()
        for local in self._local.values():
            local.close()  # type: ignore[attr-defined]
        self._built.clear()
        self._local.clear()
