"""Aligners behind one interface: ``make_aligner(name).estimate(a, b) -> Estimate``."""

from __future__ import annotations

from .base import Aligner, run_aligner, run_side_by_side
from .bruteforce import BruteForce
from .correlation import Estimate
from .emaf import Emaf
from .fourier_mellin import FourierMellin

CLASSICAL = {cls.name: cls for cls in (BruteForce, FourierMellin, Emaf)}


def make_aligner(name: str, **options) -> Aligner:
    """A classical aligner by name (``bruteforce``, ``fourier-mellin``, ``emaf``)."""
    if name not in CLASSICAL:
        raise ValueError(f"unknown method '{name}' (expected one of {', '.join(CLASSICAL)})")
    return CLASSICAL[name](**options)


__all__ = ["Aligner", "Estimate", "BruteForce", "FourierMellin", "Emaf", "CLASSICAL",
           "make_aligner", "run_aligner", "run_side_by_side"]
