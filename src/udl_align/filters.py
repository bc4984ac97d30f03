"""Image operations shared by every layer above: standardising, the Gaussian low-pass, Fourier
cropping, tensors from arrays, and the impulse repair.

Impulse repair: the pre-processing every aligner and every network input share, so that
salt-and-pepper noise, hot and dead pixels, X-ray hits and clipped (saturated) noise do not
decide a correlation.

It works on images with more than ``min_share`` of their pixels at the image's lowest or
highest value (a continuous-noise or clean image has one pixel at each and passes through
unchanged, at the cost of one minimum, maximum and comparison per pixel). For those, what the
extremes are is read off the *other* pixels: their noise level against their spread
(:func:`roughness`, from differences of neighbours).

* The other pixels are smooth (roughness below ``noisy``): the extremes are impulses laid over
  a clean image. Each impulse (a pixel at an extreme that a 3x3 median would change, i.e.
  fewer than five of its nine neighbourhood pixels share its value: an isolated extreme, not a
  saturated region) is replaced by its 3x3 median, or, where that median is itself at an
  extreme, by the Gaussian-weighted mean of its neighbours that are not impulses (normalised
  convolution, sigma 1 px); every other pixel is kept (a "switching" median filter).
* The other pixels are noisy too (noise clipped at the data range, as an 8-bit camera or
  scikit-image's ``random_noise`` with its default clipping gives; or impulses on a noisy
  image): the extremes carry the sign of the noise, not nothing, and the whole image gets a
  3x3 median, the classic robust pre-filter.

On the CPU, float32 images go through :mod:`udl_align.repair_kernel`, the same rule compiled
(numba) into one loop per image: 3-4x faster on salt-and-pepper and clipped noise. The torch
version here is the reference and serves other devices, other dtypes, and machines without
numba.

Measured on 100 held-out photograph pairs per condition (``bruteforce``'s mean rotation error,
deg, independent generator): salt-and-pepper 0.1 / 0.2 / 0.3 0.34 / 1.31 / 4.82 without the
repair, 0.04 / 0.14 / 0.65 with the switching median (a whole-image median: 0.09 / 0.24 /
1.84); clipped Gaussian noise at SNR 0.05 / 0.1 3.41 / 1.32 untouched, 3.03 / 1.25 with the
whole-image median (the switching filter there: 6.59 / 1.63).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from udl_align import repair_kernel

#: share of an image's pixels at its extremes above which it is looked at: 0.5% is 82 pixels
#: of a 128 px image; continuous noise puts 2 pixels there, salt-and-pepper 0.1 about 19%
MIN_SHARE = 0.005
#: roughness above which an image's non-extreme pixels count as noisy: measured on held-out
#: photographs, Gaussian noise at SNR 0.5 and below 0.81-1.0; clean ones under salt-and-pepper
#: 0.08-0.85, median 0.24, 98% below (the finest textures above it get the whole-image median)
NOISY = 0.75


def median3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median of images ``(B, N, N)`` (edges replicated), exact, by min/max only: each
    column of three is sorted once (shared by the three windows that hold it); a window's
    median is then the median of the largest of its three minima, the median of its three
    middles and the smallest of its three maxima. About ten times faster than
    ``torch.median`` over the unfolded windows."""
    mn, mx = torch.minimum, torch.maximum
    p = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    n = x.shape[-2]
    top, mid, bot = p[..., 0:n, :], p[..., 1:n + 1, :], p[..., 2:n + 2, :]
    lo, hi = mn(top, mid), mx(top, mid)
    lo, bot = mn(lo, bot), mx(lo, bot)  # lo: each column's minimum
    mid, hi = mn(hi, bot), mx(hi, bot)  # mid, hi: its middle and maximum
    m = x.shape[-1]

    def cols(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return v[..., 0:m], v[..., 1:m + 1], v[..., 2:m + 2]

    a, b, c = cols(lo)
    lows = mx(mx(a, b), c)
    a, b, c = cols(hi)
    highs = mn(mn(a, b), c)
    a, b, c = cols(mid)
    middles = mx(mn(a, b), mn(mx(a, b), c))
    return mx(mn(lows, middles), mn(mx(lows, middles), highs))


def roughness(x: torch.Tensor, valid: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Per image ``(B,)``: the noise level of the pixels marked ``valid``, from the
    differences of valid horizontal and vertical neighbours (``sqrt(mean(d^2) / 2)``, which is
    the standard deviation of white noise), over their standard deviation. About 1 for white
    noise, well below for a clean photograph. ``stride``: only every ``stride``-th row (and
    column, for the vertical neighbours) counts, a sample that is plenty for a ratio."""
    every = slice(None, None, stride)
    xr, vr, xc, vc = x[..., every, :], valid[..., every, :], x[..., every], valid[..., every]
    pairs = [(xr[..., :, 1:] - xr[..., :, :-1], vr[..., :, 1:] & vr[..., :, :-1]),
             (xc[..., 1:, :] - xc[..., :-1, :], vc[..., 1:, :] & vc[..., :-1, :])]
    sq = sum((d * d * m).sum(dim=(-2, -1)) for d, m in pairs)
    count = sum(m.sum(dim=(-2, -1)) for _, m in pairs).clamp_min(1)
    w = vr.to(x.dtype)
    n = w.sum(dim=(-2, -1)).clamp_min(2)
    mean = (xr * w).sum(dim=(-2, -1)) / n
    var = (((xr - mean[:, None, None]) ** 2) * w).sum(dim=(-2, -1)) / (n - 1)
    return torch.sqrt(sq / count / 2.0) / var.clamp_min(1e-12).sqrt()


def extremes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's lowest and highest value (``(B, 1, 1)``) and the pixels at either
    (boolean ``(B, N, N)``) of images ``x`` ``(B, N, N)``."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return lo, hi, (x == lo) | (x == hi)


def impulse_mask(x: torch.Tensor, med: torch.Tensor | None = None,
                 extreme: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``(B, N, N)``: the impulses of images ``x`` ``(B, N, N)``: pixels at their
    image's minimum or maximum (``extreme``, found when not given) that its 3x3 median
    (``med``, computed when not given) changes."""
    med = median3(x) if med is None else med
    extreme = extremes(x)[2] if extreme is None else extreme
    return extreme & (med != x)


#: the width (px) of the Gaussian whose weights fill a stuck impulse
FILL_SIGMA = 1.0


def fill_weights(sigma: float, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """The fill's weights: a Gaussian of width ``sigma`` sampled over ``+-ceil(4 sigma)`` px,
    ``(2r+1, 2r+1)``, summing to one."""
    r = int(math.ceil(4 * sigma))
    d = torch.arange(-r, r + 1, device=device)
    w = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2).to(dtype) / (2.0 * sigma**2))
    return w / w.sum()


def _filled(x: torch.Tensor, impulses: torch.Tensor,
            at: tuple[torch.Tensor, torch.Tensor, torch.Tensor], sigma: float) -> torch.Tensor:
    """The values :func:`fill_impulses` gives the pixels at ``at`` (image, row and column
    indices, as ``mask.nonzero(as_tuple=True)`` gives them), in their order."""
    w = fill_weights(sigma, x.dtype, x.device)
    r = (w.shape[0] - 1) // 2
    d = torch.arange(-r, r + 1, device=x.device)
    w = w.reshape(-1)
    b, n, m = x.shape
    valid = (~impulses).to(x.dtype)
    # the image's unmarked pixels and their weights, zero-padded by r: one flat index per window
    kept = F.pad(x * valid, (r, r, r, r)).reshape(-1)
    weight = F.pad(valid, (r, r, r, r)).reshape(-1)
    width = m + 2 * r
    window = (d[:, None] * width + d[None, :]).reshape(-1)
    image, row, col = at
    index = ((image * (n + 2 * r) + row + r) * width + col + r)[:, None] + window
    # a sum per row, not a matrix product: the same answer for an image in any batch
    num = (torch.take(kept, index) * w).sum(dim=1)
    den = (torch.take(weight, index) * w).sum(dim=1)
    alone = den <= 1e-3
    values = num / den.clamp_min(1e-3)
    if alone.any():  # no unmarked neighbour: the mean of the image's unmarked pixels
        image_mean = (x * valid).sum(dim=(-2, -1)) / valid.sum(dim=(-2, -1)).clamp_min(1)
        values = torch.where(alone, image_mean[image], values)
    return values


def fill_impulses(x: torch.Tensor, impulses: torch.Tensor, at: torch.Tensor | None = None,
                  sigma: float = FILL_SIGMA) -> torch.Tensor:
    """``x`` with the pixels marked in ``at`` (default: all of ``impulses``) replaced by the
    Gaussian-weighted mean of their neighbours within ``4 sigma`` that are not marked in
    ``impulses`` (normalised convolution; what lies beyond the edge counts as marked); a pixel
    with no such neighbour gets the mean of its image's unmarked pixels.

    Computed at the marked pixels only (a gather of each one's window): the repair fills a
    few hundred pixels of an image at most (the impulses whose 3x3 median is itself at an
    extreme), where a whole-image convolution by FFT cost 3-8 times as much."""
    where = (impulses if at is None else at).nonzero(as_tuple=True)
    out = x.clone()
    out[where] = _filled(x, impulses, where, sigma)
    return out


#: :func:`roughness` of the repair looks at every other row and column: the noise level over
#: the spread is a ratio that a quarter of the pixel pairs measure well. On 1600 held-out
#: photographs under salt-and-pepper (both generators) it decided as the full count for every
#: image (every fourth row and column: for all but two, whose ratios lay within 0.05 of
#: ``NOISY``)
ROUGHNESS_STRIDE = 2


class RepairPlan(NamedTuple):
    """What :func:`repair_impulses` does to a batch of images ``(B, N, N)``: their extremes
    (``lo``, ``hi``, ``extreme`` as :func:`extremes`), the indices ``(H,)`` of the images it
    touches (``hit``: more than ``min_share`` of their pixels at an extreme) and, of those,
    which have a smooth rest (``smooth`` ``(H,)``: the switching median; the others get the
    whole-image median)."""

    lo: torch.Tensor
    hi: torch.Tensor
    extreme: torch.Tensor
    hit: torch.Tensor
    smooth: torch.Tensor


def repair_plan(x: torch.Tensor, min_share: float = MIN_SHARE,
                noisy: float = NOISY) -> RepairPlan:
    """:class:`RepairPlan` of images ``x`` ``(B, N, N)`` (see module doc)."""
    lo, hi, extreme = extremes(x)
    share = extreme.sum(dim=(-2, -1)) / (x.shape[-1] * x.shape[-2])
    hit = (share > min_share).nonzero()[:, 0]
    smooth = (roughness(_rows(x, hit), ~_rows(extreme, hit), ROUGHNESS_STRIDE) < noisy
              if hit.numel() else torch.zeros(0, dtype=torch.bool, device=x.device))
    return RepairPlan(lo, hi, extreme, hit, smooth)


def _rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[rows]`` for sorted unique indices ``rows``; ``x`` itself (no copy) where they are
    all of its rows, as in a noisy batch, whose every image the repair touches."""
    return x if rows.numel() == x.shape[0] else x[rows]


#: why the compiled repair failed in this process, if it did (then it is not tried again)
_COMPILED_FAILED: list[str] = []


def _compiled_for(x: torch.Tensor) -> bool:
    """Whether :func:`repair_impulses` runs ``x`` through the compiled repair."""
    return (repair_kernel.available() and not _COMPILED_FAILED and x.device.type == "cpu"
            and x.dtype == torch.float32 and not x.requires_grad and x.numel() > 0)


def _repair_compiled(x: torch.Tensor, min_share: float, noisy: float) -> torch.Tensor:
    flat = x.detach().reshape(-1, x.shape[-2], x.shape[-1]).contiguous()
    weights = fill_weights(FILL_SIGMA).double().numpy()
    out, kinds = repair_kernel.repair_images(flat.numpy(), min_share, noisy, ROUGHNESS_STRIDE,
                                             weights, threads=torch.get_num_threads())
    return x if not kinds.any() else torch.from_numpy(out).reshape(x.shape)


def repair_impulses(x: torch.Tensor, min_share: float = MIN_SHARE,
                    noisy: float = NOISY, compiled: bool | None = None) -> torch.Tensor:
    """Images ``(..., N, N)`` with impulses repaired (see module doc) where more than
    ``min_share`` of an image's pixels sit at its extremes; other images are returned as they
    are (no copy when none needs it).

    ``compiled``: float32 images on the CPU go through :mod:`udl_align.repair_kernel` (the
    same rule in one compiled loop per image, 3-4x faster on salt-and-pepper) where numba is
    installed (``None``: whenever it can; ``False``: this torch version, the reference, which
    serves every other device and dtype)."""
    if compiled is not False and _compiled_for(x):
        try:
            return _repair_compiled(x, min_share, noisy)
        except Exception as err:  # noqa: BLE001 - e.g. numba and numpy versions that clash
            _COMPILED_FAILED.append(f"{type(err).__name__}: {err}")
            warnings.warn(f"the compiled impulse repair failed ({_COMPILED_FAILED[0]}); "
                          "using the torch version", RuntimeWarning, stacklevel=2)
    shape = x.shape
    flat = x.reshape(-1, shape[-2], shape[-1])
    lo, hi, extreme, hit, smooth = repair_plan(flat, min_share, noisy)
    if hit.numel() == 0:
        return x
    sub, ext, lo, hi = (_rows(t, hit) for t in (flat, extreme, lo, hi))
    med = median3(sub)
    fixed = med  # the other pixels are noisy: the whole image's median
    if smooth.any():  # the other pixels are smooth: a switching median
        rough = ~smooth[:, None, None]
        any_rough = bool(rough.any())
        # the median where a pixel is at an extreme (it is that pixel where it is no impulse)
        fixed = torch.where(ext | rough if any_rough else ext, med, sub)
        # an impulse whose median is itself at an extreme: the mean of the neighbours that are
        # not impulses
        impulses = impulse_mask(sub, med, ext)
        stuck = impulses & (med == lo).logical_or_(med == hi)
        if any_rough:
            stuck &= ~rough
        at = stuck.nonzero(as_tuple=True)
        if at[0].numel():
            fixed[at] = _filled(fixed, impulses, at, FILL_SIGMA)
    if hit.numel() == flat.shape[0]:
        return fixed.reshape(shape)
    out = flat.clone()
    out[hit] = fixed
    return out.reshape(shape)


def to_tensor(images, device: str | torch.device = "cpu") -> torch.Tensor:
    """``(B, N, N)`` float32 tensor on ``device`` (numpy or torch input, ``(N, N)`` allowed)."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    x = x.to(device=device, dtype=torch.float32)
    return x[None] if x.dim() == 2 else x


def _spread(centred: torch.Tensor) -> torch.Tensor:
    """Standard deviation (unbiased, as ``torch.std``) of mean-free images over their last two
    axes: a vector norm, because ``torch.std`` over two axes took 14x as long here (3 ms for
    64 images of 128 px on 2 cores, more than the low-pass filter's FFTs)."""
    count = centred.shape[-1] * centred.shape[-2]
    return torch.linalg.vector_norm(centred, dim=(-2, -1), keepdim=True) / math.sqrt(count - 1)


def image_std(x: torch.Tensor) -> torch.Tensor:
    """Standard deviation of each image ``(..., N, N)``, shaped ``(..., 1, 1)``."""
    return _spread(x - x.mean(dim=(-2, -1), keepdim=True))


def standardise(x: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """Zero mean, unit variance per image (so scores do not depend on the grey scale); the
    standard deviation is taken as at least ``floor``."""
    centred = x - x.mean(dim=(-2, -1), keepdim=True)
    return centred / _spread(centred).clamp_min(floor)


def gaussian_lowpass(x: torch.Tensor, cutoff: float | None, size: int | None = None
                     ) -> torch.Tensor:
    """Gaussian low-pass with ``sigma = cutoff`` x Nyquist (0.5 cycles/pixel); ``None``: none.

    Natural images and particles keep most power at low frequencies while white noise is flat, so
    at low SNR this raises the SNR of the correlation (a crude Wiener filter).
    ``size`` (even, below an even N): down-sample to it in the same pass by keeping the lowest
    frequencies of the half spectrum (at ``cutoff`` 0.25 and half size the filter has left
    13% of the amplitude at the new Nyquist: a fast path's resolution, not the search's).
    """
    n = x.shape[-1]
    m = n if size is None else int(size)
    if (cutoff is None or cutoff <= 0) and m == n:
        return x
    f = torch.fft.rfft2(x)
    fy = torch.fft.fftfreq(n, device=x.device)
    fx = torch.fft.rfftfreq(n, device=x.device)
    if m < n:  # the lowest frequencies of the half spectrum, filtered after (the same numbers)
        h = m // 2
        f = torch.cat([f[..., :h, : h + 1], f[..., n - h :, : h + 1]], dim=-2)
        fy, fx = torch.cat([fy[:h], fy[n - h :]]), fx[: h + 1]
    if cutoff is not None and cutoff > 0:
        sigma = 0.5 * cutoff
        f = f * torch.exp(-(fx[None, :] ** 2 + fy[:, None] ** 2) / (2.0 * sigma**2))
    if m == n:
        return torch.fft.irfft2(f, s=x.shape[-2:])
    return torch.fft.irfft2(f, s=(m, m)) * (m * m) / (n * n)


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

__all__ = ["FILL_SIGMA", "MIN_SHARE", "NOISY", "RepairPlan", "extremes", "fill_impulses",
           "fill_weights", "fourier_crop",
           "gaussian_lowpass", "image_std", "impulse_mask", "median3", "repair_impulses",
           "repair_plan", "roughness", "standardise", "to_tensor"]
