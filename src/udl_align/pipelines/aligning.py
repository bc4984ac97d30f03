"""Particles aligned to a reference batch by batch, their score, and the results of a run.

For each particle ``p`` the aligner estimates ``T`` with ``apply(reference, T) ~ p`` (the
transform taking the reference onto the particle: RELION's sense of a pose, converted by
``geometry.to_relion``); the particle is brought onto the reference by ``apply(p, T^-1)``
(bicubic).

The score is the correntropy ``mean(exp(-(x - y)^2))`` between the aligned particle and the
reference inside the disc of radius ``N/2 - max_shift - 1``, each normalised there to zero
mean and unit variance (a Gaussian kernel of width ``1/sqrt(2)`` standard deviations).
Particles with NaN or Inf pixels are skipped and counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from udl_align import geometry
from udl_align.aligners.base import Aligner, Estimate
from udl_align.aligners.correlation import correntropy, mask_radius
from udl_align.data.stacks import ParticleSet
from udl_align.errors import InputError

#: the score, as the summary of a run states it
SCORE = ("mean(exp(-(x - y)^2)), both normalised to zero mean and unit variance inside the disc "
         "of radius N/2 - max_shift - 1")


def aligned_batches(particles: ParticleSet, reference: np.ndarray, aligner: Aligner,
                    batch_size: int, progress: bool = False, desc: str | None = None,
                    workers: int = 0, first: int = 0
                    ) -> Iterator[tuple[np.ndarray, Estimate, torch.Tensor, np.ndarray, float]]:
    """Align the finite particles batch by batch, from particle ``first`` on (``workers``
    threads read ahead); yields ``(index, estimate, aligned, score, seconds)``: input
    positions, the :class:`Estimate`, the particles brought onto the reference ``(k, N, N)``
    tensor, their correntropy to it, and the time it took."""
    size = particles.size
    s = aligner.shift_range(size)
    mask = torch.as_tensor(geometry.soft_circular_mask(size, mask_radius(size, s), edge=2.0))
    ref_t = torch.as_tensor(reference)
    with tqdm(total=particles.n, initial=first, desc=desc or f"align {aligner.name}",
              unit="particle", disable=not progress) as bar:
        for start, images, finite in particles.batches(batch_size, workers, first):
            good = images[finite]
            if len(good):
                t0 = time.perf_counter()
                est = aligner.estimate(np.repeat(reference[None], len(good), 0), good)
                back = geometry.invert(geometry.Rigid.of(est.angle, est.tx, est.ty))
                aligned = geometry.warp(torch.as_tensor(good), back.angle, back.tx, back.ty,
                                        mode="bicubic")
                score = correntropy(aligned, ref_t[None], mask)
                yield (start + np.nonzero(finite)[0], est, aligned, score.numpy().copy(),
                       time.perf_counter() - t0)
            bar.update(len(images))


def count_finite(particles: ParticleSet, batch_size: int, log=print,
                 required: bool = True) -> int:
    """Particles without NaN/Inf pixels (one reading pass); warns with the count of the rest.
    ``required``: none at all is an error (one process's share may be empty)."""
    good = sum(int(f.sum()) for _, _, f in particles.batches(batch_size))
    if good == 0 and required:  # the error alone: a warning before it would be a second line
        raise InputError("no particle without NaN/Inf pixels", particles.path)
    if good < particles.n:
        log(f"warning: {particles.n - good} of {particles.n} particles have NaN/Inf pixels and "
            "are left out")
    return good


#: the per-particle results of a :class:`Part`
RESULTS = ("index", "angle", "tx", "ty", "score")


@dataclass
class Part:
    """The alignment of some particles: per aligned particle its input position, transform and
    score, the sum of the aligned images (for the average) and the seconds it took."""

    index: np.ndarray
    angle: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    score: np.ndarray
    total: np.ndarray  # (N, N) float64
    seconds: float

    @classmethod
    def empty(cls, n: int, size: int) -> Part:
        """Room for ``n`` aligned particles of ``size`` px, filled by :meth:`add`. The arrays
        are made once: small per-batch objects kept alive between the big temporaries of each
        batch fragment the heap (resident memory grew 3-4 MB per batch)."""
        return cls(np.empty(n, np.int64), *(np.empty(n) for _ in range(4)),
                   total=np.zeros((size, size)), seconds=0.0)

    def add(self, at: int, index: np.ndarray, est: Estimate, score: np.ndarray,
            aligned: torch.Tensor, seconds: float) -> int:
        """One batch of :func:`aligned_batches` into rows ``at...``; returns the next row."""
        rows = slice(at, at + len(index))
        self.index[rows], self.score[rows] = index, score
        self.angle[rows], self.tx[rows], self.ty[rows] = est.angle, est.tx, est.ty
        self.total += aligned.double().sum(dim=0).numpy()
        self.seconds += seconds
        return rows.stop

    def restore(self, results: dict[str, np.ndarray], total: np.ndarray,
                seconds: float) -> int:
        """The first rows, total and time from a saved run (see :mod:`.resume`); returns the
        next row."""
        written = len(results["index"])
        for name in RESULTS:
            getattr(self, name)[:written] = results[name]
        self.total += total
        self.seconds += seconds
        return written

    @classmethod
    def merge(cls, parts: list[Part]) -> Part:
        """The parts one after the other (the time: the slowest part's)."""
        return cls(*(np.concatenate([getattr(q, f) for q in parts]) for f in RESULTS),
                   total=sum(q.total for q in parts), seconds=max(q.seconds for q in parts))


__all__ = ["aligned_batches", "count_finite", "Part", "SCORE"]
