"""Building the base and CnR backends from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from refine.backends.base import Backend, GenerationParams
from refine.embedded import SHIPPED_ADAPTER
from refine.settings import Settings

log = logging.getLogger(__name__)
Role = Literal["base", "cnr"]


def cnr_adapter(settings: Settings) -> str | None:
    """The adapter the CnR model uses: the configured one, 'none' for none, and by default the
    shipped adapter when the CnR model is the embedded default."""
    if settings.cnr_adapter:
        return None if settings.cnr_adapter.lower() == "none" else settings.cnr_adapter
    if settings.cnr_backend == "local" and not settings.cnr_model and SHIPPED_ADAPTER.exists():
        return str(SHIPPED_ADAPTER)
    return None


def cnr_few_shot(settings: Settings) -> bool:
    """Whether CnR prompts carry few-shot examples (an untuned instruct model)."""
    if settings.cnr_mode != "auto":
        return settings.cnr_mode == "few-shot"
    return settings.cnr_backend == "local" and not settings.cnr_model and cnr_adapter(settings) is None


def generation_params(settings: Settings, role: Role) -> GenerationParams:
    """Sampling settings for a role."""
    tokens = settings.max_new_tokens if role == "base" else settings.cnr_max_new_tokens
    return GenerationParams(max_new_tokens=tokens, temperature=settings.temperature, top_p=settings.top_p)


@dataclass
class BackendPool:
    """Builds backends once and shares loaded local models between roles that use the same one."""

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
        kind = s.base_backend if role == "base" else s.cnr_backend
        model = s.base_model if role == "base" else (s.cnr_model or (s.base_model if s.base_backend == "local" else ""))
        if kind == "local":
            from refine.backends.local import LocalBackend, LocalModel

            adapter = cnr_adapter(s) if role == "cnr" else None
            key = (model, adapter, s.dtype)
            if key not in self._local:
                log.info("loading local model %r (adapter %r)", model or "embedded", adapter)
                self._local[key] = LocalModel(model, adapter=adapter, dtype=s.dtype)
            return LocalBackend(self._local[key])  # type: ignore[arg-type]
        return _remote_backend(role, kind, model, s)

    async def aclose(self) -> None:
        """Close every backend and stop the local models' workers."""
        for backend in self._built.values():
            await backend.aclose()
        for local in self._local.values():
            local.close()  # type: ignore[attr-defined]
        self._built.clear()
        self._local.clear()


def _remote_backend(role: Role, kind: str, model: str, s: Settings) -> Backend:
    raise NotImplementedError(f"{kind} backend is not wired yet")
