"""Aligners behind one interface: ``make_aligner(name).estimate(a, b) -> Estimate``."""

from __future__ import annotations

from udl_align.aligners.base import Aligner, Estimate, run_aligner, run_side_by_side
from udl_align.aligners.bruteforce import BruteForce
from udl_align.aligners.emaf import Emaf
from udl_align.aligners.fourier_mellin import FourierMellin
from udl_align.aligners.reference import ReferenceSearch

CLASSICAL = {cls.name: cls for cls in (BruteForce, FourierMellin, Emaf)}
#: aligners for measuring, not for use: too slow for a stack
YARDSTICKS = {ReferenceSearch.name: ReferenceSearch}


def make_aligner(name: str, **options) -> Aligner:
    """A classical aligner by name (``bruteforce``, ``fourier-mellin``, ``emaf``, or
    ``reference``: the plain, slow exhaustive search used as a yardstick)."""
    known = {**CLASSICAL, **YARDSTICKS}
    if name not in known:
        raise ValueError(f"unknown method '{name}' (expected one of {', '.join(known)})")
    return known[name](**options)


__all__ = ["Aligner", "Estimate", "BruteForce", "FourierMellin", "Emaf", "ReferenceSearch",
           "CLASSICAL", "YARDSTICKS",
           "make_aligner", "run_aligner", "run_side_by_side"]
