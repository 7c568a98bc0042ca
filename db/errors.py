"""Errors raised by the storage layer."""

from __future__ import annotations


class InvalidInput(ValueError):
    """A write was refused because its input is invalid; nothing was written."""
