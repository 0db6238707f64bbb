"""A training record of a trained editor: an edit with the probes its training reads."""

from __future__ import annotations

from dataclasses import dataclass

from ..requests import EditRequest, Probe


@dataclass
class TrainingRecord:
    """One training edit: the request, its paraphrase (or None) and a locality probe (or None)."""

    request: EditRequest
    paraphrase: Probe | None
    locality: Probe | None


__all__ = ["TrainingRecord"]
