"""Noise conditions: parsing ``clean | gaussian:SNR | saltpepper:P`` and adding noise.

* ``gaussian:SNR``: zero-mean Gaussian noise of variance ``var(clean) / SNR`` (SNR = signal
  variance over noise variance), measured on each clean image (inside ``mask`` when one is
  given, as for cryo-EM particles).
* ``saltpepper:P``: the paper's wording, "a certain proportion for both salt noise and pepper
  noise": a fraction ``P`` of the pixels, drawn at random, is set to the image maximum (salt) and,
  drawn independently, a fraction ``P`` to the image minimum (pepper). Where both draws hit one
  pixel, pepper wins (it is applied second), so about ``2P - P^2`` of the pixels are replaced.

Each call draws fresh noise: the two images of a pair never share a realisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

CONDITIONS = (
    "clean",
    "gaussian:0.5",
    "gaussian:0.1",
    "gaussian:0.05",
    "saltpepper:0.1",
    "saltpepper:0.2",
    "saltpepper:0.3",
)


@dataclass(frozen=True)
class Noise:
    kind: str  # "clean", "gaussian" or "saltpepper"
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
            hi = x.max(axis=(-2, -1), keepdims=True)
            lo = x.min(axis=(-2, -1), keepdims=True)
            salt = rng.random(x.shape) < self.level
            pepper = rng.random(x.shape) < self.level
            out = np.where(salt, hi, out)
            out = np.where(pepper, lo, out)
        out = out.astype(np.float32)
        return out[0] if single else out


def parse_noise(spec: str) -> Noise:
    """``clean``, ``gaussian:SNR`` (SNR > 0) or ``saltpepper:P`` (0 <= P < 1)."""
    text = str(spec).strip().lower()
    if text in ("clean", "none"):
        return Noise("clean")
    kind, _, value = text.partition(":")
    hint = "expected clean, gaussian:SNR or saltpepper:P"
    if kind not in ("gaussian", "saltpepper") or not value:
        raise InputError(f"unknown noise spec '{spec}' ({hint})")
    try:
        level = float(value)
    except ValueError:
        raise InputError(f"unknown noise spec '{spec}' ({hint})") from None
    if kind == "gaussian" and not (level > 0 and np.isfinite(level)):
        raise InputError(f"noise spec '{spec}': the SNR must be a positive number")
    if kind == "saltpepper" and not (0 <= level < 1):
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
