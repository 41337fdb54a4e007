"""A target that takes anything, for the bad specs beside it (only validated, never run)."""

from __future__ import annotations


def run(**kwargs: object) -> None:
    del kwargs
