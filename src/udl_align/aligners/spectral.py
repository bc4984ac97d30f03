"""Helpers shared by the spectrum-based aligners: windowed magnitude spectra, the a / a + 180
choice, and the polar resampling of a centred spectrum."""

from __future__ import annotations

import torch

from udl_align import geometry
from udl_align.aligners.correlation import Reference, shift_step


def centred_magnitude(x: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """``|fftshift(fft2(w * x))| ** power`` with a soft circular window ``w``.

    The window is rotation-symmetric, so rotating the image rotates the spectrum (no border
    cross), and the zero frequency sits at pixel ``N // 2``, the rotation centre.
    """
    n = x.shape[-1]
    w = torch.as_tensor(geometry.soft_circular_mask(n, n / 2 - 1, edge=n / 8), device=x.device)
    mag = torch.fft.fftshift(torch.fft.fft2(w * x), dim=(-2, -1)).abs()
    return mag if power == 1.0 else mag**power


def polar_resample(spectra: torch.Tensor, radii: torch.Tensor, angles_deg: torch.Tensor):
    """Sample centred spectra ``(B, N, N)`` at polar points: ``(B, R, A)``.

    The angle is measured counter-clockwise as displayed (``(x, y) = (r cos t, -r sin t)``), the
    sense in which ``geometry.apply`` rotates; rotating an image by ``theta`` therefore shifts its
    polar spectrum by ``+theta`` along the angle axis.
    """
    n = spectra.shape[-1]
    t = torch.deg2rad(angles_deg)
    px = radii[:, None] * torch.cos(t)[None] + n // 2
    py = -radii[:, None] * torch.sin(t)[None] + n // 2
    scale = 2.0 / (n - 1)
    grid = torch.stack([px * scale - 1.0, py * scale - 1.0], dim=-1)
    grid = grid[None].expand(spectra.shape[0], *grid.shape)
    return torch.nn.functional.grid_sample(
        spectra[:, None], grid, mode="bilinear", align_corners=True
    )[:, 0]


def settle_half_turn(
    a: torch.Tensor, b: torch.Tensor, angle: torch.Tensor, max_shift: float, ref: Reference
):
    """Given angles known modulo 180, pick ``angle`` or ``angle + 180`` by the higher NCC peak
    after the shift step. Returns ``(angle, tx, ty, score)``."""
    both = torch.stack([angle, angle + 180.0], dim=1)  # (B, 2)
    bsz = a.shape[0]
    pair = [shift_step(a, b, both[:, i], max_shift, ref) for i in range(2)]
    tx = torch.stack([p[0] for p in pair], 1)
    ty = torch.stack([p[1] for p in pair], 1)
    score = torch.stack([p[2] for p in pair], 1)
    pick = score.argmax(dim=1)
    rows = torch.arange(bsz, device=a.device)
    return both[rows, pick], tx[rows, pick], ty[rows, pick], score[rows, pick]


def low_band(n: int, lowpass: float | None) -> tuple[float, float]:
    """Radii (pixels in the centred spectrum) that carry signal: from 2 up to ~2 sigma of the
    Gaussian pre-filter (or 0.9 Nyquist without one)."""
    top = 0.9 * (n / 2) if not lowpass else min(0.9, 2.0 * lowpass) * (n / 2)
    return 2.0, max(top, 4.0)


__all__ = ["centred_magnitude", "polar_resample", "settle_half_turn", "low_band"]
