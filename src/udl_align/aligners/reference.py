"""A plain, slow exhaustive search: the yardstick the fast aligners are measured against.

Nothing of the package's search machinery is used (only the geometry's rotation, which owns the
convention): each image is pre-filtered by a 3x3 median then a Gaussian blur (``sigma`` px);
``a`` is turned to every angle of a 1 deg grid at full resolution (bicubic), cut to the disc of
radius ``N/2 - max_shift`` and correlated with ``b`` by FFT zero-padded to at least
``N + max_shift + 1`` (no wrap-around, no normalisation beyond the mean); the best correlation
over the allowed shifts scores the angle.
The best angle is placed between its neighbours by a parabola, and its peak's shift likewise.
360 full-resolution rotations and 360 padded FFTs per pair: tens of times slower than
``bruteforce``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from udl_align import geometry
from udl_align.aligners.base import Aligner, Estimate
from udl_align.filters import median3, to_tensor


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    r = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    y = F.pad(x[:, None], (radius,) * 4, mode="reflect")
    y = F.conv2d(y, g.reshape(1, 1, 1, -1))
    return F.conv2d(y, g.reshape(1, 1, -1, 1))[:, 0]


def _smooth(m: int) -> bool:
    """Whether ``m`` has no prime factor above 5 (a fast FFT size)."""
    for p in (2, 3, 5):
        while m % p == 0:
            m //= p
    return m == 1


def _vertex(left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    denom = left - 2 * mid + right
    off = 0.5 * (left - right) / torch.where(denom < 0, denom, -torch.ones_like(denom))
    return torch.where(denom < 0, off, torch.zeros_like(off)).clamp(-0.5, 0.5)


class ReferenceSearch(Aligner):
    name = "reference"
    batch_size = 4

    def __init__(self, sigma: float = 1.5, angle_step: float = 1.0, chunk: int = 45,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.sigma = float(sigma)
        self.angle_step = float(angle_step)
        self.chunk = int(chunk)

    def prefilter(self, x: torch.Tensor) -> torch.Tensor:
        y = gaussian_blur(median3(x), self.sigma)
        return y - y.mean(dim=(-2, -1), keepdim=True)

    @torch.no_grad()
    def estimate(self, a, b) -> Estimate:
        ta = self.prefilter(to_tensor(a, self.device))
        tb = self.prefilter(to_tensor(b, self.device))
        bsz, n = ta.shape[0], ta.shape[-1]
        s = self.shift_range(n)
        disc = torch.as_tensor(geometry.soft_circular_mask(n, n / 2 - s - 1, edge=1.0),
                               dtype=ta.dtype, device=ta.device)
        # zero padding to at least n + s + 1 (no wrap-around at the shifts searched), at a
        # size with small prime factors
        pad = next(m for m in range(n + s + 1, 4 * n) if _smooth(m))
        fb = torch.fft.rfft2(tb, s=(pad, pad))
        k = int(round(360.0 / self.angle_step))
        angles = torch.arange(k, dtype=ta.dtype, device=ta.device) * (360.0 / k)
        idx = torch.arange(-s - 1, s + 2, device=ta.device) % pad
        maps = []
        for lo in range(0, k, self.chunk):
            turned = geometry.rotate_all(ta, angles[lo:lo + self.chunk], mode="bicubic") * disc
            turned = turned - (turned.sum(dim=(-2, -1), keepdim=True) / disc.sum()) * disc
            fa = torch.fft.rfft2(turned, s=(pad, pad))
            # b correlated with the turned a: entry t scores "b is the turned a moved by t"
            corr = torch.fft.irfft2(torch.conj(fa) * fb[:, None], s=(pad, pad))
            maps.append(corr[..., idx[:, None], idx])
        window = torch.cat(maps, dim=1)  # (B, K, W, W), W = 2s + 3
        w = window.shape[-1]
        inner = window[..., 1:-1, 1:-1].flatten(-2)
        score, where = inner.max(dim=-1)  # (B, K)
        rows = torch.arange(bsz, device=ta.device)
        best = score.argmax(dim=1)
        off = _vertex(score[rows, (best - 1) % k], score[rows, best], score[rows, (best + 1) % k])
        angle = angles[best] + off * (360.0 / k)
        peak = window[rows, best]
        iy, ix = where[rows, best] // (w - 2) + 1, where[rows, best] % (w - 2) + 1
        sub_x = _vertex(peak[rows, iy, ix - 1], peak[rows, iy, ix], peak[rows, iy, ix + 1])
        sub_y = _vertex(peak[rows, iy - 1, ix], peak[rows, iy, ix], peak[rows, iy + 1, ix])
        tx = (ix - 1 - s).to(ta.dtype) + sub_x
        ty = (iy - 1 - s).to(ta.dtype) + sub_y
        return Estimate.from_tensors(angle, tx, ty, score[rows, best])


__all__ = ["ReferenceSearch"]
