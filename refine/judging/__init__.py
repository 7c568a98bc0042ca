"""Pairwise LLM judging of revisions against the originals, and the one-command experiment
(revise → judge → stats)."""
