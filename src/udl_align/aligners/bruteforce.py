"""Exhaustive search: every angle on a grid, FFT cross-correlation over shifts, best peak wins.

The full-circle search runs on images down-sampled by Fourier cropping to ``search_size``
(the low-pass pre-filter has already removed what the cropping drops, and it cuts the cost about
fourfold); then a narrow
search of +-2 grid steps at full resolution around each of the best few coarse peaks (the
best full-resolution peak wins), then the shared shift step.
"""

from __future__ import annotations

import torch

from .. import geometry
from .base import Aligner
from .correlation import (
    Estimate,
    fourier_crop,
    prepare_reference,
    refine_prepared,
    score_angles,
    top_peaks,
)


class BruteForce(Aligner):
    name = "bruteforce"

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

    def search(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        centre: torch.Tensor | None = None,
        half_width: float = 180.0,
        widen: bool = True,
    ) -> Estimate:
        """The search on pre-processed images: the whole circle, or ``centre +- half_width``
        per pair (``centre`` ``(B,)`` degrees; how a network's angle is refined). With
        ``widen``, pairs whose best windowed angle sits at the window's edge are searched over
        the whole circle."""
        n = a.shape[-1]
        s = self.shift_range(n)
        crop = self.search_size and self.search_size < n and n % 2 == 0
        m = int(self.search_size) // 2 * 2 if crop else n
        sa, sb = fourier_crop(a, m), fourier_crop(b, m)
        ref = prepare_reference(sb, s * m / n)
        step = self.angle_step
        if centre is None or half_width >= 180.0:
            k = int(round(360.0 / step))
            step = 360.0 / k
            grid = torch.arange(k, device=a.device, dtype=a.dtype) * step
            base = torch.zeros(a.shape[0], device=a.device, dtype=a.dtype)
            circular = True
        else:
            # turn each a to its centre once, then one shared grid of offsets for the batch
            k = int(round(half_width / step))
            grid = torch.arange(-k, k + 1, device=a.device, dtype=a.dtype) * step
            base = centre.to(a.dtype)
            sa = geometry.warp(sa, base, mode="bicubic")
            circular = False
        scores, _, _ = score_angles(sa, ref, grid, chunk=self.chunk)
        if not circular and widen:
            # the refinement judges itself: a best angle at the window's edge means the true
            # one may lie outside, so those pairs get the full circle instead
            best = scores.argmax(dim=1)
            edge = (best <= 1) | (best >= grid.shape[0] - 2)
            if edge.any():
                outer = self.search(a[edge], b[edge])
                keep = ~edge
                if not keep.any():
                    return outer
                inner = self._finish(a[keep], b[keep], base[keep], grid, scores[keep], circular,
                                     step)
                return Estimate.merge(keep.cpu().numpy(), inner, outer)
        return self._finish(a, b, base, grid, scores, circular, step)

    def _finish(self, a, b, base, grid, scores, circular: bool, step: float) -> Estimate:
        """From coarse scores ``(B, K)`` on ``base + grid`` to the final estimates."""
        # the best few coarse peaks all go to full resolution: at low SNR the down-sampled
        # search sometimes ranks the right basin second
        starts = base[:, None] + grid[top_peaks(scores, self.candidates, circular)]
        # +-2 grid steps: the coarse, down-sampled score can be a step off (interpolation blur
        # that changes with the angle biases it where the image has power near Nyquist)
        out = refine_prepared(a, b, starts, 2.0 * step, self.refine_step,
                              self.shift_range(a.shape[-1]))
        return Estimate.from_tensors(*out)
