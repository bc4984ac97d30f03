"""Aligners behind one interface: ``make_aligner(name).estimate(a, b) -> Estimate``."""

from __future__ import annotations

from pathlib import Path

from udl_align.aligners.base import Aligner, Estimate, run_aligner, run_side_by_side
from udl_align.aligners.bruteforce import BruteForce
from udl_align.aligners.emaf import Emaf
from udl_align.aligners.fourier_mellin import FourierMellin
from udl_align.aligners.network import NetworkAligner
from udl_align.aligners.reference import ReferenceSearch

CLASSICAL = {cls.name: cls for cls in (BruteForce, FourierMellin, Emaf)}
#: aligners for measuring, not for use: too slow for a stack
YARDSTICKS = {ReferenceSearch.name: ReferenceSearch}


def make_aligner(name: str, model: str | Path | None = None, **options) -> Aligner:
    """An aligner by name: ``network`` (the UDL network of checkpoint ``model``, ``default``
    for the shipped one; ``refine=True`` for its angle refined by the guided search), a
    classical one (``bruteforce``, ``fourier-mellin``, ``emaf``), or ``reference`` (the plain,
    slow exhaustive search used as a yardstick). ``options`` go to the aligner."""
    if name == "network":
        if model is None:
            raise ValueError("the network aligner needs a model: a checkpoint or 'default'")
        return NetworkAligner.from_checkpoint(model, **options)
    known = {**CLASSICAL, **YARDSTICKS}
    if name not in known:
        raise ValueError(f"unknown method '{name}' (expected network or one of "
                         f"{', '.join(known)})")
    return known[name](**options)


__all__ = ["Aligner", "Estimate", "BruteForce", "FourierMellin", "Emaf", "NetworkAligner",
           "ReferenceSearch",
           "CLASSICAL", "YARDSTICKS",
           "make_aligner", "run_aligner", "run_side_by_side"]
