"""The Gradio interface: layout, event wiring and rendering of refinement events. It only wires
events to the engine (refine/) and the storage layer (db/); no model or SQL code lives here."""

from ui.blocks import build_app, launch
from ui.context import AppContext

__all__ = ["AppContext", "build_app", "launch"]
