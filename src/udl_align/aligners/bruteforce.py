"""Exhaustive search: every angle on a grid, FFT cross-correlation over shifts, best peak wins.

The full-circle search runs on images down-sampled by Fourier cropping to ``search_size``
(the low-pass pre-filter has already removed what the cropping drops, and it cuts the cost about
fourfold); then a narrow
search of +-2 grid steps at full resolution around each of the best few coarse peaks (the
best full-resolution peak wins), then the shared shift step.
"""

from __future__ import annotations

import torch

from udl_align.aligners.base import Aligner, Estimate
from udl_align.aligners.correlation import (
    prepare_reference,
    refine_prepared,
    score_angles,
    top_peaks,
)
from udl_align.aligners.guided import cropped_size
from udl_align.filters import fourier_crop


class BruteForce(Aligner):
    name = "bruteforce"
    batch_size = 8  # its 90-angle chunks outgrow the caches above 8 pairs: 11% faster than at 16

    def __init__(
        self,
        angle_step: float = 1.0,
        search_size: int | None = 64,
        refine_step: float = 0.5,
        chunk: int = 90,
        candidates: int = 3,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.angle_step = float(angle_step)
        self.search_size = search_size
        self.refine_step = float(refine_step)
        self.chunk = int(chunk)
        self.candidates = int(candidates)

    def _estimate(self, a: torch.Tensor, b: torch.Tensor) -> Estimate:
        return self.search(a, b)

    def search(self, a: torch.Tensor, b: torch.Tensor) -> Estimate:
        """The whole-circle search on pre-processed images."""
        n = a.shape[-1]
        s = self.shift_range(n)
        m = cropped_size(n, self.search_size)
        ref = prepare_reference(fourier_crop(b, m), s * m / n)
        k = int(round(360.0 / self.angle_step))
        step = 360.0 / k
        grid = torch.arange(k, device=a.device, dtype=a.dtype) * step
        scores, _, _ = score_angles(fourier_crop(a, m), ref, grid, chunk=self.chunk)
        # the best few coarse peaks all go to full resolution: at low SNR the down-sampled
        # search sometimes ranks the right basin second
        starts = grid[top_peaks(scores, self.candidates)]
        # +-2 grid steps: the coarse, down-sampled score can be a step off (interpolation blur
        # that changes with the angle biases it where the image has power near Nyquist)
        out = refine_prepared(a, b, starts, 2.0 * step, self.refine_step, s)
        return Estimate.from_tensors(*out)
