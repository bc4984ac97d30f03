"""Exhaustive search guided by a prior angle: how ``--refine`` turns the network's angle into
bruteforce-grade accuracy at a fraction of bruteforce's cost.

All stages work on pre-processed images (the shared pre-filter) and score angles with the
shared masked NCC (:mod:`.correlation`):

1. **window**: ``prior +- span`` in ``window_step`` steps on images Fourier-cropped to
   ``search_size`` (the size of bruteforce's coarse search). A best angle at the window's
   edge, or a higher score at one of three probes (the prior turned by 90, 180 and 270 deg),
   says the truth may lie outside it.
2. **fallback**, for pairs whose prior is unsure (the caller says which) or whose window says
   so: the whole circle at ``fallback_step`` on images cropped to ``fallback_size``;
   its best ``candidates`` peaks and the window's best are each searched ``verify`` steps of
   ``verify_step`` deg either side at ``search_size``, and the best of those wins. A pair
   that needs the whole circle gets it, at about a seventh of bruteforce's price (a quarter
   of its angles at 48 px, no full-resolution candidates).
3. **narrow**: +-1 deg in 0.5 deg steps at ``search_size`` (bicubic rotation).
4. **polish** at full resolution: three angles 0.5 deg apart with exact sub-pixel peaks,
   one step outward if the best is at an end, a parabola over the angle, and the shift
   interpolated to that angle (so no further shift step is needed). Steps of 0.25 deg walked
   1.6 times per pair at SNR 0.05 (the narrow stage's angle is noisier than a quarter
   degree there) for no accuracy: 0.5 deg and one walk measured the same on 200 held-out
   pairs in all seven conditions, 10-15% faster.

The defaults were chosen by measurement on held-out COCO pairs (200 per condition, against
bruteforce in the same run; ``benchmarks/refine_settings.py`` compares settings). A fallback
at 32 px in 4 deg steps lost pairs that bruteforce finds even with 6 candidates
(salt-and-pepper 0.2: 1.64 against 0.82 deg; Gaussian SNR 0.05: 3.61 against 3.00), and so
did one at 40 px in 3 deg steps (salt-and-pepper 0.2: 1.51); at 48 px in 4 deg steps,
candidates checked at -1.5, 0 and +1.5 deg, and a window in 2 deg steps every condition
stayed within 5% of bruteforce, 10% faster than 3 deg steps, +-2 deg checks and a 1.5 deg
window. A window at 48 px lost accuracy (Gaussian SNR 0.5: 0.32 against 0.26 deg).
"""

from __future__ import annotations

import torch

from udl_align import geometry
from udl_align.aligners.base import Estimate
from udl_align.aligners.correlation import (
    Reference,
    best_angle,
    prepare_reference,
    score_angles,
    top_peaks,
)
from udl_align.filters import fourier_crop

#: angles from the prior (deg) scored beside the window: if one beats the window's best, the
#: pair gets the whole circle
PROBES = (90.0, 180.0, 270.0)


def cropped_size(n: int, size: int | None) -> int:
    """The size a search at ``size`` works at: ``size`` (made even) when it is smaller than an
    even ``n``, else ``n`` itself (Fourier cropping keeps the centre only between even sizes)."""
    if size and size < n and n % 2 == 0:
        return int(size) // 2 * 2
    return n


def _pick(grid: torch.Tensor, scores: torch.Tensor, step: float) -> torch.Tensor:
    """From per-pair candidate grids ``(B, C, K)`` and their scores: the best candidate's
    parabola-interpolated angle ``(B,)``."""
    rows = torch.arange(grid.shape[0], device=grid.device)
    pick = scores.amax(dim=2).argmax(dim=1)
    angle, _ = best_angle(grid[rows, pick], scores[rows, pick], step, circular=False)
    return angle


class GuidedSearch:
    def __init__(
        self,
        max_shift: int,
        span: float = 15.0,
        window_step: float = 2.0,
        search_size: int | None = 64,
        fallback_size: int | None = 48,
        fallback_step: float = 4.0,
        candidates: int = 4,
        verify: int = 1,
        verify_step: float = 1.5,
        polish_step: float = 0.5,
        walks: int = 1,
        probes: tuple[float, ...] = PROBES,
    ) -> None:
        self.max_shift = int(max_shift)
        self.span = float(span)
        self.window_step = float(window_step)
        self.search_size = search_size
        self.fallback_size = fallback_size
        self.fallback_step = float(fallback_step)
        self.candidates = int(candidates)
        self.verify = int(verify)
        self.verify_step = float(verify_step)
        self.polish_step = float(polish_step)
        self.walks = int(walks)
        self.probes = tuple(float(p) for p in probes)

    def __call__(self, a: torch.Tensor, b: torch.Tensor, prior: torch.Tensor,
                 unsure: torch.Tensor | None = None, turns: int = 1) -> Estimate:
        """``a``, ``b`` pre-processed ``(B, N, N)``; ``prior`` ``(B,)`` degrees; ``unsure``
        ``(B,)`` bool: pairs whose prior is not to be trusted (they get the whole circle).
        ``turns``: the prior is known only modulo ``360 / turns`` (a network for a C_n
        particle): a window around each of its turns, the best kept."""
        n = a.shape[-1]
        m = cropped_size(n, self.search_size)
        sa, sb = fourier_crop(a, m), fourier_crop(b, m)
        ref = prepare_reference(sb, self.max_shift * m / n)

        windows = [self.window(sa, ref, prior.to(a.dtype) + k * 360.0 / turns)
                   for k in range(turns)]
        angles = torch.stack([w[0] for w in windows], 1)
        if turns > 1:  # the turns of a near-symmetric particle differ in fine detail only:
            # compared at full resolution, each at its window's best
            scores, _, _ = score_angles(a, prepare_reference(b, self.max_shift), angles,
                                        mode="bicubic")
        else:
            scores = windows[0][2][:, None]
        pick = scores.argmax(dim=1, keepdim=True)
        angle = angles.gather(1, pick)[:, 0]
        outside = torch.stack([w[1] for w in windows], 1).gather(1, pick)[:, 0]
        need = outside if unsure is None else outside | unsure.to(outside.device)
        if need.any():
            rows = need.nonzero()[:, 0]
            angle[rows] = self.fallback(a[rows], b[rows], sa[rows], ref.rows(rows), angle[rows])
        # narrow, still at the search size: +-1 deg in half steps
        grid = angle[:, None] + torch.arange(-2, 3, device=a.device, dtype=a.dtype) * 0.5
        scores, _, _ = score_angles(sa, ref, grid, mode="bicubic")
        angle, _ = best_angle(grid, scores, 0.5, circular=False)
        return self.polish(a, b, angle)

    def window(self, sa: torch.Tensor, ref: Reference, prior: torch.Tensor):
        """Best angle in ``prior +- span`` (``window_step`` grid, parabola) and whether the
        truth may lie outside the window: its best sits at the window's edge, or one of the
        ``PROBES`` (the prior turned by a quarter, a half and three quarters) scores higher
        than the window's best (a gross error of the prior, most often a half turn of a
        near-symmetric particle, that the window alone cannot see). Each image is turned to
        its prior once; then one grid serves the batch."""
        k = int(round(self.span / self.window_step))
        grid = torch.arange(-k, k + 1, device=sa.device, dtype=sa.dtype) * self.window_step
        probes = torch.tensor(self.probes, device=sa.device, dtype=sa.dtype)
        scores, _, _ = score_angles(geometry.warp(sa, prior, mode="bicubic"), ref,
                                    torch.cat([grid, probes]), chunk=90)
        scores, probed = scores[:, : grid.shape[0]], scores[:, grid.shape[0]:]
        best = scores.argmax(dim=1)
        outside = ((best <= 1) | (best >= grid.shape[0] - 2)
                   | (probed > scores.amax(dim=1, keepdim=True)).any(dim=1))
        angle, _ = best_angle(prior[:, None] + grid, scores, self.window_step, circular=False)
        return angle, outside, scores.amax(dim=1)

    def fallback(self, a, b, sa, ref: Reference, window_best: torch.Tensor) -> torch.Tensor:
        """The whole circle, cheaply: coarse on small images, the best peaks (and the window's
        best) re-scored +-``verify`` deg at the search size."""
        n = a.shape[-1]
        q = cropped_size(n, self.fallback_size)
        qa, qb = fourier_crop(a, q), fourier_crop(b, q)
        k = int(round(360.0 / self.fallback_step))
        circle = torch.arange(k, device=a.device, dtype=a.dtype) * (360.0 / k)
        coarse, _, _ = score_angles(qa, prepare_reference(qb, self.max_shift * q / n), circle,
                                    chunk=90)
        starts = torch.cat([circle[top_peaks(coarse, self.candidates)], window_best[:, None]], 1)
        grid = starts[:, :, None] + torch.arange(-self.verify, self.verify + 1, device=a.device,
                                                 dtype=a.dtype) * self.verify_step
        scores, _, _ = score_angles(sa, ref, grid.flatten(1), mode="bicubic")
        return _pick(grid, scores.reshape(grid.shape), self.verify_step)

    def polish(self, a: torch.Tensor, b: torch.Tensor, angle: torch.Tensor) -> Estimate:
        """Full resolution, exact sub-pixel peaks at three angles ``polish_step`` apart; while
        the best is at an end, the three slide one step that way (at most ``walks`` times)."""
        step = self.polish_step
        ref = prepare_reference(b, self.max_shift)
        grid = angle[:, None] + torch.tensor([-step, 0.0, step], device=a.device, dtype=a.dtype)
        score, tx, ty = score_angles(a, ref, grid, mode="bicubic", fine=True)
        for _ in range(self.walks):
            side = score.argmax(dim=1) - 1  # -1, 0 or +1
            rows = side.nonzero()[:, 0]
            if rows.numel() == 0:
                break
            side = side[rows].to(a.dtype)[:, None]
            new_angle = grid[rows, 1:2] + 2.0 * side * step
            new = score_angles(a[rows], ref.rows(rows), new_angle, mode="bicubic", fine=True)
            for values, extra in zip((score, tx, ty), new, strict=True):
                values[rows] = _slide(values[rows], extra, side)
            grid[rows] = _slide(grid[rows], new_angle, side)
        best, _ = best_angle(grid, score, step, circular=False)
        u = (best - grid[:, 1]) / step  # where the peak is, in steps from the middle angle
        return Estimate.from_tensors(best, _quadratic(tx, u), _quadratic(ty, u),
                                     score.amax(dim=1))


def _slide(triple: torch.Tensor, extra: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """``(l, m, r)`` with a new value beyond an end: ``(new, l, m)`` for side -1, else
    ``(m, r, new)``."""
    left = torch.cat([extra, triple[:, :2]], 1)
    right = torch.cat([triple[:, 1:], extra], 1)
    return torch.where(side < 0, left, right)


def _quadratic(values: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The parabola through ``values`` ``(B, 3)`` at -1, 0, 1, evaluated at ``u``."""
    left, mid, right = values.unbind(1)
    return mid + 0.5 * u * (right - left) + 0.5 * u * u * (right - 2.0 * mid + left)


__all__ = ["GuidedSearch", "cropped_size"]
