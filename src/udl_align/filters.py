"""Impulse repair: the pre-processing every aligner and every network input share, so that
salt-and-pepper noise, hot and dead pixels and X-ray hits do not decide a correlation.

An impulse is a pixel sitting at its image's lowest or highest value while fewer than five of
the nine pixels of its 3x3 neighbourhood share that value (exactly the pixels a 3x3 median would
change: an isolated extreme, not a saturated region). Impulses are replaced by the
normalised convolution of the pixels that are not impulses (a Gaussian-weighted mean of the
valid neighbours, sigma 1 px: Knutsson and Westin's normalised convolution); every other pixel
is kept as it is (a "switching" filter, unlike a plain median, which blurs every pixel).

The repair is chosen automatically per image: only images with more than ``min_share`` of their
pixels at an extreme value are touched. A Gaussian-noise or clean image has one pixel at each
extreme (its minimum and its maximum) and passes through unchanged, at the cost of one minimum,
maximum and comparison per pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: share of an image's pixels at its extremes above which it is repaired: 0.5% is 82 pixels of
#: a 128 px image; continuous noise puts 2 pixels there, salt-and-pepper 0.1 about 19%
MIN_SHARE = 0.005


def _gaussian_kernel(sigma: float, radius: int, device, dtype) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-(r**2) / (2.0 * sigma**2))
    return (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]


def _box3(mask: torch.Tensor) -> torch.Tensor:
    """How many of each pixel's 3x3 neighbourhood (itself included) are set, ``(B, N, N)``
    (edges count replicated pixels, as a median with edge padding would)."""
    padded = F.pad(mask[:, None].to(torch.float32), (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(padded, 3, stride=1)[:, 0] * 9.0


def impulse_mask(x: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, N, N)``: the impulses of images ``x`` ``(B, N, N)`` (see module doc)."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    at_lo, at_hi = x == lo, x == hi
    # a pixel at the maximum is changed by a 3x3 median iff fewer than 5 of the 9 are at it
    return (at_lo & (_box3(at_lo) < 4.5)) | (at_hi & (_box3(at_hi) < 4.5))


def fill_impulses(x: torch.Tensor, impulses: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """``x`` with the pixels marked in ``impulses`` replaced by the Gaussian-weighted mean of
    their neighbours that are not marked; a pixel with no such neighbour within ``3 sigma``
    gets the mean of its image's unmarked pixels."""
    valid = (~impulses).to(x.dtype)[:, None]
    radius = max(1, int(round(3 * sigma)))
    kernel = _gaussian_kernel(sigma, radius, x.device, x.dtype)
    pad = (radius,) * 4
    num = F.conv2d(F.pad(x[:, None] * valid, pad, mode="reflect"), kernel)[:, 0]
    den = F.conv2d(F.pad(valid, pad, mode="reflect"), kernel)[:, 0]
    count = valid.sum(dim=(-2, -1)).clamp_min(1.0)[:, 0]
    image_mean = (x * valid[:, 0]).sum(dim=(-2, -1)) / count
    fill = torch.where(den > 1e-3, num / den.clamp_min(1e-3), image_mean[:, None, None])
    return torch.where(impulses, fill, x)


def repair_impulses(x: torch.Tensor, min_share: float = MIN_SHARE) -> torch.Tensor:
    """Images ``(..., N, N)`` with their impulses repaired where more than ``min_share`` of an
    image's pixels sit at its extremes; other images are returned as they are (no copy when
    none needs it)."""
    shape = x.shape
    flat = x.reshape(-1, shape[-2], shape[-1])
    lo = flat.amin(dim=(-2, -1), keepdim=True)
    hi = flat.amax(dim=(-2, -1), keepdim=True)
    share = ((flat == lo) | (flat == hi)).sum(dim=(-2, -1)) / (shape[-1] * shape[-2])
    hit = (share > min_share).nonzero()[:, 0]
    if hit.numel() == 0:
        return x
    sub = flat[hit]
    out = flat.clone()
    out[hit] = fill_impulses(sub, impulse_mask(sub))
    return out.reshape(shape)


__all__ = ["MIN_SHARE", "fill_impulses", "impulse_mask", "repair_impulses"]
