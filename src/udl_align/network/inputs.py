"""What the network sees: each image's impulses repaired, resampled to the model's size
(bilinear with antialiasing), standardised and masked by one soft disc, or the log-magnitude of its
spectrum."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from udl_align import geometry
from udl_align.filters import gaussian_lowpass, image_std, repair_impulses, standardise
from udl_align.network.models import NetConfig


def input_mask(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.as_tensor(geometry.soft_circular_mask(size, size / 2 - 1, edge=size / 16),
                           device=device)


def prepare_input(images: torch.Tensor, size: int, mask: torch.Tensor | None = None,
                  kind: str = "image", lowpass: float = 0.0, repair: bool = True):
    """``(B, S, S)`` -> ``(B, size, size)``: repair impulses (unless the caller has:
    ``repair=False``), resample, standardise, mask (see module doc).

    ``kind="spectrum"``: the background level (mean outside the mask) is subtracted instead of
    the mean, so a centred particle on flat background leaves no fixed disc behind that would
    mix with it (the spectrum would then change with the particle's shift); then
    ``log(1 + |FFT|)``, centred (``fftshift``), standardised and masked again (the disc keeps
    frequencies up to Nyquist in every direction alike).
    """
    x = images[:, None] if images.dim() == 3 else images
    x = repair_impulses(x) if repair else x
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    x = x[:, 0]
    if lowpass > 0:
        x = gaussian_lowpass(x, lowpass)
    mask = input_mask(size, x.device) if mask is None else mask
    if kind != "spectrum":
        return standardise(x, floor=1e-6) * mask
    outside = mask < 0.5
    level = x[:, outside].mean(dim=1)[:, None, None]
    x = (x - level) / image_std(x).clamp_min(1e-6) * mask
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)).abs()
    return standardise(torch.log1p(spectrum), floor=1e-6) * mask


def model_input(cfg: NetConfig, images: torch.Tensor, mask: torch.Tensor | None = None,
                repair: bool = True):
    """What network ``cfg`` takes: :func:`prepare_input` at its size, of its kind, filtered."""
    return prepare_input(images, cfg.size, mask, cfg.input, cfg.input_lowpass, repair)
