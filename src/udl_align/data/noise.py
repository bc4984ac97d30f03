"""Noise conditions: parsing ``clean | gaussian:SNR | saltpepper:P | saltpepper-patch:P`` and
adding noise.

* ``gaussian:SNR``: zero-mean Gaussian noise of variance ``var(clean) / SNR`` (SNR = signal
  variance over noise variance), measured on each clean image (inside ``mask`` when one is
  given, as for cryo-EM particles).
* ``saltpepper:P``: the standard reading (scikit-image's ``random_noise``, MATLAB's
  ``imnoise``; the paper's photographs are 8-bit): a fraction ``P`` of the pixels, drawn at
  random, is set to the *top of the data range* (salt) and, drawn independently, a fraction ``P``
  to its bottom (pepper). The data range is [0, 1] for images that lie in it (photographs scaled
  to [0, 1]), else the lowest and highest value of all the images given. Where both draws hit one
  pixel, pepper wins (it is applied second), so about ``2P - P^2`` of the pixels are replaced.
* ``saltpepper-patch:P``: a milder, non-standard variant: the same draws, but salt is each
  image's own maximum and pepper its own minimum, so a low-contrast patch gets low-contrast
  impulses.

Each call draws fresh noise: the two images of a pair never share a realisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from udl_align.errors import InputError

CONDITIONS = (
    "clean",
    "gaussian:0.5",
    "gaussian:0.1",
    "gaussian:0.05",
    "saltpepper:0.1",
    "saltpepper:0.2",
    "saltpepper:0.3",
)


KINDS = ("gaussian", "saltpepper", "saltpepper-patch")


@dataclass(frozen=True)
class Noise:
    kind: str  # "clean", "gaussian", "saltpepper" or "saltpepper-patch"
    level: float = 0.0  # SNR for gaussian, proportion for saltpepper

    def __str__(self) -> str:
        return self.kind if self.kind == "clean" else f"{self.kind}:{self.level:g}"

    def add(
        self, images: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Noisy copies of ``images`` (``(N, N)`` or ``(k, N, N)``), float32, independent noise."""
        x = np.asarray(images, np.float32)
        if self.kind == "clean":
            return x.copy()
        single = x.ndim == 2
        x = x[None] if single else x
        if self.kind == "gaussian":
            w = np.ones(x.shape[-2:], np.float32) if mask is None else mask.astype(np.float32)
            w = w / w.sum()
            mean = np.einsum("kij,ij->k", x, w)
            var = np.einsum("kij,ij->k", (x - mean[:, None, None]) ** 2, w)
            sigma = np.sqrt(var / self.level).astype(np.float32)
            out = x + rng.standard_normal(x.shape, dtype=np.float32) * sigma[:, None, None]
        else:
            out = x.copy()
            if self.kind == "saltpepper-patch":
                hi = x.max(axis=(-2, -1), keepdims=True)
                lo = x.min(axis=(-2, -1), keepdims=True)
            else:
                lo, hi = data_range(x)
            salt = rng.random(x.shape) < self.level
            pepper = rng.random(x.shape) < self.level
            out = np.where(salt, hi, out)
            out = np.where(pepper, lo, out)
        out = out.astype(np.float32)
        return out[0] if single else out


def data_range(images: np.ndarray) -> tuple[float, float]:
    """The bottom and top of the images' data range: ``(0, 1)`` where every value lies in it
    (photographs scaled to [0, 1]), else their lowest and highest value."""
    lo, hi = float(np.min(images)), float(np.max(images))
    return (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)


def parse_noise(spec: str) -> Noise:
    """``clean``, ``gaussian:SNR`` (SNR > 0), ``saltpepper:P`` or ``saltpepper-patch:P``
    (0 <= P < 1)."""
    text = str(spec).strip().lower()
    if text in ("clean", "none"):
        return Noise("clean")
    kind, _, value = text.partition(":")
    hint = "expected clean, gaussian:SNR, saltpepper:P or saltpepper-patch:P"
    if kind not in KINDS or not value:
        raise InputError(f"unknown noise spec '{spec}' ({hint})")
    try:
        level = float(value)
    except ValueError:
        raise InputError(f"unknown noise spec '{spec}' ({hint})") from None
    if kind == "gaussian" and not (level > 0 and np.isfinite(level)):
        raise InputError(f"noise spec '{spec}': the SNR must be a positive number")
    if kind != "gaussian" and not (0 <= level < 1):
        raise InputError(f"noise spec '{spec}': the proportion must be in [0, 1)")
    return Noise(kind, level)


def parse_noises(spec: str | Noise | list) -> list[Noise]:
    """One condition, a comma-separated list, or ``mix`` (the seven conditions of Table 1)."""
    if isinstance(spec, Noise):
        return [spec]
    if isinstance(spec, (list, tuple)):
        return [n if isinstance(n, Noise) else parse_noise(n) for n in spec]
    text = str(spec).strip().lower()
    if text == "mix":
        return [parse_noise(c) for c in CONDITIONS]
    return [parse_noise(part) for part in text.split(",")]


def add_mixed(
    noises: list[Noise], images: np.ndarray, which: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Noisy copies of ``(k, N, N)`` images, image ``i`` under condition ``noises[which[i]]``."""
    out = np.empty_like(images, dtype=np.float32)
    for i, noise in enumerate(noises):
        sel = which == i
        if sel.any():
            out[sel] = noise.add(images[sel], rng)
    return out


def measured_snr(clean: np.ndarray, noisy: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Signal variance over noise variance, as the generator defines it (weighted by ``mask``)."""
    w = np.ones(clean.shape[-2:]) if mask is None else np.asarray(mask, np.float64)
    w = np.broadcast_to(w / w.sum(), clean.shape)
    noise = np.asarray(noisy, np.float64) - clean

    def wvar(v):
        m = (v * w).sum(axis=(-2, -1), keepdims=True)
        return ((v - m) ** 2 * w).sum(axis=(-2, -1))

    return float(np.mean(wvar(np.asarray(clean, np.float64))) / np.mean(wvar(noise)))
