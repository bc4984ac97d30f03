"""The shared correlation machinery: pre-filter, masked normalised cross-correlation over shifts,
the shift step every aligner ends with, and the narrow angle search (``refine``).

Scoring a candidate angle ``theta`` for a pair ``(a, b)``: rotate ``a`` by ``theta`` (the
geometry module's ``warp``), cut it with a soft circular mask of radius ``N/2 - max_shift - 1``
(so the masked template, moved by any allowed shift, stays inside ``b``'s frame and the circular
FFT correlation never wraps), and compute the masked normalised cross-correlation (NCC) with ``b``
at every shift in ``[-max_shift, max_shift]^2`` by FFT. The template's norm and ``b``'s local
mean and energy under the moved mask are both divided out, so bright regions of ``b`` win nothing.
The best peak over shifts is the angle's score; its sub-pixel position (a parabola through the
peak and its neighbours on each axis) is the shift.

This is plain (not phase-normalised) correlation of lightly low-passed images: phase correlation
whitens the spectrum and so amplifies the noise-dominated high frequencies at SNR 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import geometry


def to_tensor(images, device: str | torch.device = "cpu") -> torch.Tensor:
    """``(B, N, N)`` float32 tensor on ``device`` (numpy or torch input, ``(N, N)`` allowed)."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    x = x.to(device=device, dtype=torch.float32)
    return x[None] if x.dim() == 2 else x


def standardise(x: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """Zero mean, unit variance per image (so scores do not depend on the grey scale); the
    standard deviation is taken as at least ``floor``."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True).clamp_min(floor)
    return (x - mean) / std


def gaussian_lowpass(x: torch.Tensor, cutoff: float | None) -> torch.Tensor:
    """Gaussian low-pass with ``sigma = cutoff`` x Nyquist (0.5 cycles/pixel); ``None``: none.

    Natural images and particles keep most power at low frequencies while white noise is flat, so
    at low SNR this raises the SNR of the correlation (a crude Wiener filter).
    """
    if cutoff is None or cutoff <= 0:
        return x
    n = x.shape[-1]
    fy = torch.fft.fftfreq(n, device=x.device)[:, None]
    fx = torch.fft.rfftfreq(n, device=x.device)[None, :]
    sigma = 0.5 * cutoff
    h = torch.exp(-(fx**2 + fy**2) / (2.0 * sigma**2))
    return torch.fft.irfft2(torch.fft.rfft2(x) * h, s=x.shape[-2:])


def fourier_crop(x: torch.Tensor, m: int) -> torch.Tensor:
    """Down-sample ``(..., N, N)`` to ``(..., m, m)`` by keeping the ``m x m`` lowest frequencies.

    Pixel ``N // 2`` maps onto pixel ``m // 2`` (both sizes even), so the rotation centre is kept.
    """
    n = x.shape[-1]
    if m == n:
        return x
    f = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    lo = n // 2 - m // 2
    f = f[..., lo : lo + m, lo : lo + m]
    return torch.fft.ifft2(torch.fft.ifftshift(f, dim=(-2, -1))).real * (m * m) / (n * n)


def mask_radius(n: int, max_shift: float) -> float:
    return n / 2 - math.ceil(max_shift) - 1


@dataclass
class Reference:
    """What the NCC needs of ``b``, computed once per pair: spectrum and local statistics.
    The full complex spectra that only exact sub-pixel peaks need are made on first use."""

    b: torch.Tensor  # (B, N, N)
    spectrum: torch.Tensor  # rfft2(b), (B, N, N//2+1)
    local_var: torch.Tensor  # masked variance of b under the mask moved by t, (B, N, N)
    mask: torch.Tensor  # (N, N)
    max_shift: int
    _full: tuple[torch.Tensor, torch.Tensor] | None = None

    def _full_spectra(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._full is None:
            full_fm = torch.conj(torch.fft.fft2(self.mask))
            full_fb = torch.fft.fft2(self.b)
            moments = torch.stack([full_fm * full_fb, full_fm * torch.fft.fft2(self.b ** 2)], 1)
            self._full = (full_fb, moments)
        return self._full

    def rows(self, index: torch.Tensor) -> Reference:
        """The same for a subset of the pairs (``index``: row numbers)."""
        full = None if self._full is None else tuple(f[index] for f in self._full)
        return Reference(self.b[index], self.spectrum[index], self.local_var[index], self.mask,
                         self.max_shift, full)

    @property
    def full_spectrum(self) -> torch.Tensor:
        """fft2(b), (B, N, N): for sub-pixel evaluation."""
        return self._full_spectra()[0]

    @property
    def mask_moments(self) -> torch.Tensor:
        """conj(fft2(mask)) * fft2(b), likewise with b^2: (B, 2, N, N)."""
        return self._full_spectra()[1]


def prepare_reference(b: torch.Tensor, max_shift: float, edge: float = 2.0) -> Reference:
    n = b.shape[-1]
    s = int(math.ceil(max_shift))
    mask = torch.as_tensor(
        geometry.soft_circular_mask(n, mask_radius(n, s), edge=edge), device=b.device
    )
    fm = torch.conj(torch.fft.rfft2(mask))
    fb = torch.fft.rfft2(b)
    s1 = torch.fft.irfft2(fm * fb, s=(n, n))
    s2 = torch.fft.irfft2(fm * torch.fft.rfft2(b * b), s=(n, n))
    local_var = (s2 - s1 * s1 / mask.sum()).clamp_min(1e-6 * float(mask.sum()))
    return Reference(b, fb, local_var, mask, s)


def masked_template(templates: torch.Tensor, mask: torch.Tensor):
    """``mask * (T - masked mean)`` and its masked energy ``sum(mask * (T - mean)^2)``."""
    mean = (templates * mask).sum(dim=(-2, -1), keepdim=True) / mask.sum()
    energy = (mask * (templates - mean) ** 2).sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return mask * (templates - mean), energy


def ncc_maps(templates: torch.Tensor, ref: Reference) -> torch.Tensor:
    """Masked NCC of templates ``(B, K, N, N)`` with ``b`` at every circular shift.

    Returns ``(B, K, N, N)``; entry ``[.., t_y mod N, t_x mod N]`` scores "``b`` is the
    template moved by ``t``".
    """
    n = templates.shape[-1]
    centred, energy = masked_template(templates, ref.mask)
    corr = torch.fft.irfft2(torch.conj(torch.fft.rfft2(centred)) * ref.spectrum[:, None], s=(n, n))
    return corr / torch.sqrt(energy * ref.local_var[:, None])


def fine_peaks(
    templates: torch.Tensor,
    ref: Reference,
    tx: torch.Tensor,
    ty: torch.Tensor,
    half_width: float = 0.6,
    step: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sub-pixel NCC peak by evaluating the correlation's Fourier series on a fine grid.

    A parabola through three integer samples is biased by up to ~0.3 px for sharp peaks; the
    Fourier series is the exact band-limited interpolation of the correlation (the matrix-DFT
    upsampling of Guizar-Sicairos et al.), and so are ``b``'s local mean and energy under the
    moved mask, so this is the exact NCC at the grid points: ``(tx, ty) +- half_width`` in steps
    of ``step`` px. A parabola through the best grid point and its neighbours then places the
    peak between them (on samples 0.1 px apart its bias is far below 0.01 px).
    Returns ``(score, tx, ty)`` shaped like ``tx``.
    """
    n = templates.shape[-1]
    centred, energy = masked_template(templates, ref.mask)
    cross = torch.conj(torch.fft.fft2(centred)) * ref.full_spectrum[:, None]  # (B, K, n, n)
    freq = torch.fft.fftfreq(n, device=templates.device, dtype=templates.dtype) * n
    msum = ref.mask.sum()
    k = int(round(half_width / step))
    offs = torch.arange(-k, k + 1, device=tx.device, dtype=tx.dtype) * step
    px, py = tx[..., None] + offs, ty[..., None] + offs  # (B, K, P)
    # exp(2 pi i (t + o) f / n) = exp(2 pi i t f / n) exp(2 pi i o f / n): one exponential per
    # peak and one table for the grid's offsets, not one per grid point (exp was 8% of polish)
    table = torch.exp(2j * torch.pi * offs[:, None] * freq / n)  # (P, n)
    ey = torch.exp(2j * torch.pi * ty[..., None] * freq / n)[..., None, :] * table  # (B,K,P,n)
    ex = torch.exp(2j * torch.pi * tx[..., None] * freq / n)[..., None, :] * table
    corr = torch.einsum("bkpy,bkyx,bkqx->bkpq", ey, cross, ex).real
    s1 = torch.einsum("bkpy,byx,bkqx->bkpq", ey, ref.mask_moments[:, 0], ex).real
    s2 = torch.einsum("bkpy,byx,bkqx->bkpq", ey, ref.mask_moments[:, 1], ex).real
    var = (s2 / (n * n) - (s1 / (n * n)) ** 2 / msum).clamp_min(1e-6 * float(msum))
    grid = corr / (n * n) / torch.sqrt(energy * var)  # (B, K, P, P): [y, x]
    p = offs.shape[0]
    score, idx = grid.flatten(-2).max(dim=-1)
    iy, ix = idx // p, idx % p

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        lin = yy.clamp(0, p - 1) * p + xx.clamp(0, p - 1)
        return grid.flatten(-2).gather(-1, lin[..., None])[..., 0]

    sub_x, gain_x = parabola_vertex(at(iy, ix - 1), score, at(iy, ix + 1))
    sub_y, gain_y = parabola_vertex(at(iy - 1, ix), score, at(iy + 1, ix))
    # at the grid's edge the true peak may lie beyond: keep the grid point there
    inner_x, inner_y = (ix > 0) & (ix < p - 1), (iy > 0) & (iy < p - 1)
    sub_x, gain_x = sub_x * inner_x, gain_x * inner_x
    sub_y, gain_y = sub_y * inner_y, gain_y * inner_y
    best_x = px.gather(-1, ix[..., None])[..., 0] + sub_x * step
    best_y = py.gather(-1, iy[..., None])[..., 0] + sub_y * step
    return score + gain_x + gain_y, best_x, best_y


def window(maps: torch.Tensor, s: int) -> torch.Tensor:
    """The ``(2s+1)^2`` block of allowed shifts, ``[..., s + ty, s + tx]``."""
    rolled = torch.roll(maps, shifts=(s, s), dims=(-2, -1))
    return rolled[..., : 2 * s + 1, : 2 * s + 1]


def parabola_vertex(
    left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex of the parabola through three equally spaced samples around a maximum:
    ``(offset in steps, clamped to [-0.5, 0.5]; height gained over mid)``."""
    denom = left - 2.0 * mid + right
    curved = denom < 0
    safe = denom.where(curved, -torch.ones_like(denom))
    off = torch.where(curved, 0.5 * (left - right) / safe, torch.zeros_like(mid)).clamp(-0.5, 0.5)
    gain = torch.where(curved, -0.5 * off * off * safe, torch.zeros_like(mid))
    return off, gain


def parabola_offset(left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return parabola_vertex(left, mid, right)[0]


def peaks(maps: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best allowed shift of each map ``(..., N, N)``: ``(score, tx, ty)`` with sub-pixel shift."""
    n = maps.shape[-1]
    win = window(maps, s)
    flat = win.flatten(-2)
    score, idx = flat.max(dim=-1)
    iy, ix = idx // (2 * s + 1), idx % (2 * s + 1)
    ty, tx = (iy - s), (ix - s)
    # neighbours from the circular map, valid even at the window's edge
    gy, gx = ty % n, tx % n
    full = maps.flatten(-2)

    def at(dy: int, dx: int) -> torch.Tensor:
        lin = ((gy + dy) % n) * n + (gx + dx) % n
        return full.gather(-1, lin[..., None])[..., 0]

    sub_x, gain_x = parabola_vertex(at(0, -1), score, at(0, 1))
    sub_y, gain_y = parabola_vertex(at(-1, 0), score, at(1, 0))
    # the interpolated peak height, so a score does not depend on where the integer grid falls
    return score + gain_x + gain_y, tx.to(maps.dtype) + sub_x, ty.to(maps.dtype) + sub_y


def score_angles(
    a: torch.Tensor,
    ref: Reference,
    angles: torch.Tensor,
    chunk: int = 64,
    mode: str = "bilinear",
    fine: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score candidate angles for every pair: ``(score, tx, ty)`` each ``(B, K)``. ``angles`` is
    ``(B, K)`` (per pair) or ``(K,)`` (the same grid for all pairs, which is cheaper). Rotations
    are done in chunks of ``chunk`` angles to bound memory. ``fine``: sub-pixel peaks from the
    correlation's Fourier series instead of parabolas (slower, exact)."""
    bsz, n = a.shape[0], a.shape[-1]
    k = angles.shape[-1]
    out = [], [], []
    for lo in range(0, k, chunk):
        ang = angles[..., lo : lo + chunk]
        kk = ang.shape[-1]
        if ang.dim() == 1:
            rotated = geometry.rotate_all(a, ang, mode=mode)
        else:
            rotated = geometry.warp(
                a[:, None].expand(bsz, kk, n, n).reshape(bsz * kk, n, n), ang.reshape(-1),
                mode=mode,
            ).reshape(bsz, kk, n, n)
        found = peaks(ncc_maps(rotated, ref), ref.max_shift)
        if fine:
            found = fine_peaks(rotated, ref, found[1], found[2])
        for acc, val in zip(out, found, strict=True):
            acc.append(val)
    return tuple(torch.cat(v, dim=1) for v in out)  # type: ignore[return-value]


def top_peaks(scores: torch.Tensor, count: int, circular: bool = True) -> torch.Tensor:
    """Indices ``(B, count)`` of the highest local maxima of score rows ``(B, K)`` (a local
    maximum is at least its two neighbours; plateaus may give neighbours twice). Not
    ``circular``: the row's ends count as peaks when they beat their one neighbour."""
    left, right = scores.roll(1, dims=1), scores.roll(-1, dims=1)
    if not circular:
        left[:, 0], right[:, -1] = -torch.inf, -torch.inf
    is_peak = (scores >= left) & (scores >= right)
    masked = torch.where(is_peak, scores, torch.full_like(scores, -torch.inf))
    return masked.topk(min(count, scores.shape[1]), dim=1).indices


def best_angle(
    angles: torch.Tensor, scores: torch.Tensor, step: float, circular: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best angle per row with parabolic sub-step interpolation; ``(angle, index)``."""
    k = scores.shape[1]
    idx = scores.argmax(dim=1)
    rows = torch.arange(scores.shape[0], device=scores.device)
    if circular:
        left, right = scores[rows, (idx - 1) % k], scores[rows, (idx + 1) % k]
        off = parabola_offset(left, scores[rows, idx], right)
    else:
        inner = (idx > 0) & (idx < k - 1)
        li, ri = (idx - 1).clamp(0, k - 1), (idx + 1).clamp(0, k - 1)
        off = parabola_offset(scores[rows, li], scores[rows, idx], scores[rows, ri])
        off = torch.where(inner, off, torch.zeros_like(off))
    return angles[rows, idx] + off * step, idx


def correntropy(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(exp(-(x - y)^2))`` over ``mask`` after normalising each image inside it (zero
    mean, unit variance): a Gaussian kernel of width ``sigma = 1/sqrt(2)`` in units of each
    image's standard deviation. 1 for identical images; noise pulls it down."""
    wsum = mask.sum()

    def norm(v):
        mean = (v * mask).sum(dim=(-2, -1), keepdim=True) / wsum
        var = ((v - mean) ** 2 * mask).sum(dim=(-2, -1), keepdim=True) / wsum
        return (v - mean) / var.clamp_min(1e-12).sqrt()

    return (torch.exp(-((norm(x) - norm(y)) ** 2)) * mask).sum(dim=(-2, -1)) / wsum


@dataclass
class Estimate:
    """Per-pair result of an aligner: the transform taking ``a`` onto ``b`` and a score."""

    angle: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    score: np.ndarray

    @classmethod
    def from_tensors(cls, angle, tx, ty, score) -> Estimate:
        def arr(v):
            return v.detach().cpu().double().numpy()

        return cls(geometry.wrap360(arr(angle)), arr(tx), arr(ty), arr(score))

    @classmethod
    def merge(cls, take_first: np.ndarray, first: Estimate, second: Estimate) -> Estimate:
        """Rows of ``first`` where ``take_first``, of ``second`` elsewhere, in order."""
        out = []
        for f in ("angle", "tx", "ty", "score"):
            v = np.empty(len(take_first))
            v[take_first], v[~take_first] = getattr(first, f), getattr(second, f)
            out.append(v)
        return cls(*out)

    @classmethod
    def concat(cls, parts: list[Estimate]) -> Estimate:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("angle", "tx", "ty", "score")))


class Preprocess:
    """Standardise, then low-pass: the same for every aligner, so scores compare."""

    def __init__(self, lowpass: float | None) -> None:
        self.lowpass = lowpass

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return gaussian_lowpass(standardise(x), self.lowpass)


def shift_step(
    a: torch.Tensor, b: torch.Tensor, angle: torch.Tensor, max_shift: float,
    ref: Reference | None = None, fine: bool = True, mode: str = "bicubic",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one shift step: rotate ``a`` by ``angle`` (``mode``: bicubic, or bilinear, a quarter
    cheaper, where the angle is a few degrees off anyway), masked NCC with ``b``, sub-pixel
    peak (exact with ``fine``, else a parabola: up to ~0.3 px off, about twice as fast).
    Inputs already pre-processed. Returns ``(tx, ty, score)``."""
    ref = prepare_reference(b, max_shift) if ref is None else ref
    score, tx, ty = score_angles(a, ref, angle.reshape(-1, 1), mode=mode, fine=fine)
    return tx[:, 0], ty[:, 0], score[:, 0]


def refine_prepared(
    a: torch.Tensor,
    b: torch.Tensor,
    initial: torch.Tensor,
    span: float,
    step: float,
    max_shift: float,
    ref: Reference | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Narrow search ``initial +- span`` at ``step`` on pre-processed images, then the shift
    step at the best (sub-step) angle. ``initial`` is ``(B,)`` or ``(B, C)`` (C candidate starts
    per pair; the best peak over all of them wins). Returns ``(angle, tx, ty, score)``.

    Two stages: the whole span with parabola-interpolated peaks (cheap), then +-1 step around
    the best at half steps with exact sub-pixel peaks (the parabola's shift bias would move
    the angle by a few tenths of a degree). Bicubic rotation throughout: bilinear smoothing
    varies with the sub-pixel phase and biases fine angles.
    """
    ref = prepare_reference(b, max_shift) if ref is None else ref
    bsz = a.shape[0]
    center = initial.reshape(bsz, -1)  # (B, C): several candidate starts per pair allowed
    for half_width, spacing, fine in ((span, step, False), (step, step / 2, True)):
        k = int(round(half_width / spacing))
        offsets = torch.arange(-k, k + 1, device=a.device, dtype=a.dtype) * spacing
        grid = center[:, :, None] + offsets  # (B, C, 2k+1)
        scores, _, _ = score_angles(a, ref, grid.reshape(bsz, -1), mode="bicubic", fine=fine)
        scores = scores.reshape(grid.shape)
        pick = scores.amax(dim=2).argmax(dim=1)  # the candidate with the best peak
        rows = torch.arange(bsz, device=a.device)
        center, _ = best_angle(grid[rows, pick], scores[rows, pick], spacing, circular=False)
        center = center[:, None]
    angle = center[:, 0]
    tx, ty, score = shift_step(a, b, angle, max_shift, ref)
    return angle, tx, ty, score
