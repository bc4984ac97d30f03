"""Training pairs from one particle stack (``udl-align train --data stack.mrcs|particles.star``).

Two different particles of one class are two views of the same object in unknown in-plane
poses, each with its own noise: exactly the pairs UDL needs, with no labels. A particle is
never paired with itself, so the two images of a pair never share a noise realisation. With
``group_by`` (a STAR column such as ``rlnClassNumber``) both particles of a pair come from the
same group; without it the whole stack is one group.

With a ``reference`` (a class average or a projection of the user's map), every pair is
(reference, particle) instead: the pairs ``align --stack --reference`` will see, with one clean
side, so the signal is far stronger than between two noisy particles.

Every tenth particle is held out for the validation diagnostic. Where the STAR carries the true
transforms (``synth cryoem`` writes them), pairs come with their true relative transform, which
only that diagnostic reads.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from udl_align import geometry
from udl_align.data.sources import PairBatch
from udl_align.data.stacks import ParticleSet
from udl_align.errors import InputError

#: times a batch is redrawn to replace particles with NaN or Inf pixels before giving up
REDRAWS = 20


def is_held_out(n: int) -> np.ndarray:
    """Which of ``n`` particles the validation diagnostic keeps: every tenth."""
    return np.arange(n) % 10 == 0


class StackPairSource:
    """The pair-source interface of the training loop (``sample``, ``sample_views``, ``rng``,
    ``noise_rng``) over a :class:`~udl_align.data.stacks.ParticleSet`."""

    def __init__(self, particles: ParticleSet, seed: int = 0, part: str = "train",
                 group_by: str = "", reference: np.ndarray | None = None,
                 targets: np.ndarray | None = None) -> None:
        n = particles.n
        if n < 20:
            raise InputError(f"holds {n} particles: training needs at least 20",
                             particles.path)
        held = is_held_out(n)
        pool = np.nonzero(held if part == "val" else ~held)[0]
        if targets is not None:  # only the particles that have one
            pool = pool[np.isfinite(targets[pool]).all(axis=1)]
        labels = self._labels(particles, group_by)[pool]
        self.groups = [pool[labels == g] for g in np.unique(labels)]
        self.groups = [g for g in self.groups if len(g) >= 3]  # a calibration cycle needs 3
        if not self.groups:
            raise InputError(f"no group of '{group_by}' has 3 particles to pair", particles.path)
        self.particles = particles
        self.size = particles.size
        self.reference = None if reference is None else np.asarray(reference, np.float32)
        # what the pairs' angles say: ``targets`` (e.g. the exhaustive search's poses, for
        # training on them), else the STAR's truth, if any (for the validation diagnostic)
        self.truth = particles.transforms() if targets is None else np.asarray(targets)
        self.rng = np.random.default_rng([seed, 0])
        self.noise_rng = np.random.default_rng([seed, 1])  # unused; kept for checkpoints
        self._files = ExitStack()
        self._read = self._files.enter_context(particles.reader())

    @staticmethod
    def _labels(particles: ParticleSet, group_by: str) -> np.ndarray:
        if not group_by:
            return np.zeros(particles.n, np.int64)
        if particles.rows is None or group_by not in particles.rows.columns:
            raise InputError(f"has no column '{group_by}' to group particles by",
                             particles.path)
        return particles.rows[group_by].astype(str).to_numpy()

    def close(self) -> None:
        self._files.close()

    def _draw(self, n: int, k: int) -> np.ndarray:
        """``(n, k)`` particle positions: ``k`` different members of one group per row, the
        group picked in proportion to its size."""
        sizes = np.array([len(g) for g in self.groups], np.float64)
        which = self.rng.choice(len(self.groups), n, p=sizes / sizes.sum())
        return np.stack([self.rng.choice(self.groups[g], k, replace=False) for g in which])

    def _views(self, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Drawn rows of particle positions and their images ``(n, k, N, N)``; rows with a
        non-finite image are drawn again."""
        index = self._draw(n, k)
        images = self._read(index.ravel()).reshape(n, k, self.size, self.size)
        for _ in range(REDRAWS):
            bad = ~np.isfinite(images).all(axis=(2, 3)).all(axis=1)
            if not bad.any():
                return index, images
            index[bad] = self._draw(int(bad.sum()), k)
            images[bad] = self._read(index[bad].ravel()).reshape(-1, k, self.size, self.size)
        raise InputError("too many particles with NaN or Inf pixels to draw training pairs",
                         self.particles.path)

    def _relative(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """``(n, 3)`` transforms taking particle ``first`` onto particle ``second`` (NaN when
        the STAR has no truth)."""
        if self.truth is None:
            return np.full((len(first), 3), np.nan)
        t1, t2 = (geometry.Rigid.of(*self.truth[i].T) for i in (first, second))
        r = geometry.compose(geometry.invert(t1), t2)
        return np.stack([r.angle, r.tx, r.ty], 1)

    def _onto(self, index: np.ndarray) -> np.ndarray:
        """``(n, 3)`` transforms taking the reference onto particles ``index`` (NaN without
        truth)."""
        if self.truth is None:
            return np.full((len(index), 3), np.nan)
        return self.truth[index]

    def sample(self, n: int, keep_clean: bool = False) -> PairBatch:
        if self.reference is not None:
            index, images = self._views(n, 1)
            truth = self._onto(index[:, 0])
            return PairBatch(a=np.repeat(self.reference[None], n, 0), b=images[:, 0],
                             angle=truth[:, 0], tx=truth[:, 1], ty=truth[:, 2])
        index, images = self._views(n, 2)
        truth = self._relative(index[:, 0], index[:, 1])
        return PairBatch(a=images[:, 0], b=images[:, 1], angle=truth[:, 0], tx=truth[:, 1],
                         ty=truth[:, 2])

    def sample_views(self, n: int, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Groups of ``k`` different particles of one group (the reference first, when there
        is one), and each one's transform from the first (NaN without truth)."""
        if self.reference is not None:
            index, images = self._views(n, k - 1)
            ref = np.repeat(self.reference[None, None], n, 0)
            truth = np.concatenate([np.zeros((n, 1, 3)), np.stack(
                [self._onto(index[:, j]) for j in range(k - 1)], 1)], 1)
            return np.concatenate([ref, images], 1), truth
        index, images = self._views(n, k)
        truth = np.stack([self._relative(index[:, 0], index[:, j]) for j in range(k)], 1)
        return images, truth


__all__ = ["StackPairSource", "is_held_out"]
