"""Refine: critique-and-revise LLM answers with natural-language feedback."""

__version__ = "0.1.0"
