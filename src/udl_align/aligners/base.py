"""One interface for every aligner: ``estimate(a, b) -> Estimate`` on batches, CPU or CUDA."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .correlation import Estimate, Preprocess, refine_prepared, to_tensor


class Aligner:
    """Base class. Subclasses implement :meth:`_estimate` on pre-processed ``(B, N, N)`` tensors.

    ``max_shift``: the largest shift searched, in pixels (``None``: ``N // 8``).
    ``lowpass``: Gaussian pre-filter, sigma as a fraction of Nyquist (``None``: off).
    """

    name = "aligner"

    def __init__(
        self,
        max_shift: float | None = None,
        lowpass: float | None = 0.25,
        device: str | torch.device = "cpu",
    ) -> None:
        self.max_shift = max_shift
        self.preprocess = Preprocess(lowpass)
        self.device = torch.device(device)

    def shift_range(self, n: int) -> int:
        s = n // 8 if self.max_shift is None else self.max_shift
        return int(math.ceil(min(max(s, 0), n // 2 - 4)))

    @torch.no_grad()
    def estimate(self, a, b) -> Estimate:
        """The transforms taking each ``a[i]`` onto ``b[i]`` (``apply(a, T) ~ b``)."""
        ta, tb = to_tensor(a, self.device), to_tensor(b, self.device)
        if ta.shape != tb.shape:
            raise ValueError(f"a and b differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.shape[-1] != ta.shape[-2]:
            raise ValueError(f"images are not square: {tuple(ta.shape)}")
        return self._estimate(self.preprocess(ta), self.preprocess(tb))

    def _estimate(self, a: torch.Tensor, b: torch.Tensor) -> Estimate:
        raise NotImplementedError

    @torch.no_grad()
    def refine(self, a, b, initial, span: float = 3.0, step: float = 0.25) -> Estimate:
        """Narrow exhaustive search around ``initial`` angles (degrees), then the shift step."""
        ta, tb = to_tensor(a, self.device), to_tensor(b, self.device)
        init = torch.as_tensor(np.asarray(initial, np.float32), device=self.device).reshape(-1)
        pa, pb = self.preprocess(ta), self.preprocess(tb)
        out = refine_prepared(pa, pb, init, span, step, self.shift_range(ta.shape[-1]))
        return Estimate.from_tensors(*out)


def run_aligner(
    aligner: Aligner,
    a: np.ndarray,
    b: np.ndarray,
    batch_size: int = 16,
    progress: bool = True,
    desc: str | None = None,
) -> tuple[Estimate, np.ndarray]:
    """Align all pairs in batches; returns the estimates and the seconds spent per pair."""
    parts, seconds = [], []
    n = len(a)
    with tqdm(total=n, desc=desc or aligner.name, unit="pair", disable=not progress) as bar:
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            start = time.perf_counter()
            parts.append(aligner.estimate(a[lo:hi], b[lo:hi]))
            if aligner.device.type == "cuda":
                torch.cuda.synchronize(aligner.device)
            elapsed = time.perf_counter() - start
            seconds.append(np.full(hi - lo, elapsed / (hi - lo)))
            bar.update(hi - lo)
    return Estimate.concat(parts), np.concatenate(seconds)
