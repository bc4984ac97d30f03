"""The pair-source protocol the training loop draws from, and its simplest kind: a pairs file."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from udl_align import geometry


@dataclass
class PairBatch:
    """Noisy pairs with their truth; ``clean_a``/``clean_b`` before noise."""

    a: np.ndarray
    b: np.ndarray
    angle: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    source: list[str] = field(default_factory=list)
    clean_a: np.ndarray | None = None
    clean_b: np.ndarray | None = None


class PairFileSource:
    """Training pairs drawn at random from a pairs file (``udl-align train --data pairs.npz``).

    The same interface as :class:`NaturalPairSource` (``sample``, ``sample_views``, ``rng``,
    ``noise_rng``), so the training loop does not care where pairs come from. ``part="val"``
    holds every tenth pair (all pairs when there are fewer than 20), ``"train"`` the rest. A
    file without truth gives NaN angles: fine for UDL and STN, not for supervised training.
    Noise is whatever the file holds; none is added.
    """

    def __init__(self, pairs, seed: int = 0, part: str = "train") -> None:
        self.pairs = pairs
        n = pairs.n
        every = np.arange(n)
        held = every % 10 == 0 if n >= 20 else np.ones(n, bool)
        self.pool = every[held] if part == "val" else every[~held if n >= 20 else held]
        self.rng = np.random.default_rng([seed, 0])
        self.noise_rng = np.random.default_rng([seed, 1])  # unused; kept for checkpoints
        self.size = pairs.size

    def _truth(self, idx: np.ndarray, name: str) -> np.ndarray:
        values = getattr(self.pairs, name)
        return np.full(len(idx), np.nan) if values is None else np.asarray(values)[idx]

    def sample(self, n: int, keep_clean: bool = False) -> PairBatch:
        idx = np.sort(self.rng.choice(self.pool, n, replace=n > len(self.pool)))
        return PairBatch(a=np.asarray(self.pairs.a[idx], np.float32),
                         b=np.asarray(self.pairs.b[idx], np.float32),
                         angle=self._truth(idx, "angle"), tx=self._truth(idx, "tx"),
                         ty=self._truth(idx, "ty"))

    def sample_views(self, n: int, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Groups ``(a, b, apply(a, phi), ...)`` with random known ``phi``: a file holds only
        two views of each content, so the third is a rotated copy of the first (it shares
        ``a``'s noise, which only the pair ``(c, a)`` of a calibration cycle sees)."""
        batch = self.sample(n)
        views, truth = [batch.a, batch.b], [np.zeros((n, 3)),
                                            np.stack([batch.angle, batch.tx, batch.ty], 1)]
        for _ in range(k - 2):
            phi = self.rng.uniform(0.0, 360.0, n)
            views.append(np.stack([geometry.apply(x, (p, 0.0, 0.0), fill=float(x.mean()))
                                   for x, p in zip(batch.a, phi, strict=True)]).astype(np.float32))
            truth.append(np.stack([phi, np.zeros(n), np.zeros(n)], 1))
        return np.stack(views[:k], 1), np.stack(truth[:k], 1)
