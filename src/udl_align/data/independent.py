"""A second, independent pair generator for the benchmarks, built from other tools and rules than
:mod:`udl_align.data.photos`, so that a result that holds on both is not an artefact of one of them.

For each pair: a photograph (read by scikit-image, grey by its ``rgb2gray``), a window around a
random centre; ``b`` is that window **shifted first** (``scipy.ndimage.shift``, cubic spline)
and **then turned** about the patch centre (``skimage.transform.rotate``, cubic,
counter-clockwise as displayed); both patches are the window's centre. The shift applied is
``R(angle)^-1 t`` for ``t`` integer and uniform in ``[-max_shift, max_shift]`` on each axis, so
the true shift ``t`` spans the same square as the search does. Noise comes from
``skimage.util.random_noise`` with its defaults: ``gaussian:SNR`` with variance
``var(patch) / SNR``, clipped to [0, 1] as ``random_noise`` does by default (an 8-bit photograph
saturates: at SNR 0.05 more than half the pixels end at 0 or 1, so the stated SNR is the noise
added, not what is left); the standard salt-and-pepper (``saltpepper:P``: its ``salt`` mode
at proportion P, then its ``pepper`` mode at P: the data range's top and bottom, 1 and 0).

Its own texture rule: the mean Sobel gradient magnitude (``skimage.filters.sobel``) inside the
central disc of radius ``size/2 - max_shift`` at least 0.02 and the spread between the 5th and
95th grey-level percentiles there at least 0.15, for both patches.

Shifting then turning is "turn, then shift by ``R(angle) s``" in the package's convention
(:mod:`udl_align.geometry`: ``g(p) = f(R^-1 (p - c - t) + c)``): turning about ``c`` maps the
shifted content ``c + s + q`` to ``c + R (s + q)``, so the truth is ``(angle, R s)``
(:func:`truth_from_shift_then_turn`, tested against :mod:`udl_align.geometry`).

The photographs of each split are those of :func:`udl_align.data.photos.select_split` (the same
held-out photographs for both generators); nothing else is shared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import color, filters, transform, util
from skimage import io as skio

from udl_align.data.noise import parse_noise
from udl_align.data.photos import select_split
from udl_align.errors import InputError
from udl_align.io.images import list_images
from udl_align.io.pairs import Pairs

MIN_SOBEL = 0.02
MIN_SPREAD = 0.15


def truth_from_shift_then_turn(angle, sx, sy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(angle, tx, ty)`` in the package's convention for "shift by ``(sx, sy)`` pixels
    (``sx`` along columns), then turn by ``angle`` degrees counter-clockwise about the centre":
    ``t = R(angle) s`` with ``R = [[cos, sin], [-sin, cos]]`` in ``(x, y)``."""
    a = np.deg2rad(np.asarray(angle, np.float64))
    sx, sy = np.asarray(sx, np.float64), np.asarray(sy, np.float64)
    tx = np.cos(a) * sx + np.sin(a) * sy
    ty = -np.sin(a) * sx + np.cos(a) * sy
    return np.mod(np.asarray(angle, np.float64), 360.0), tx, ty


def shift_for(angle: float, tx: float, ty: float) -> tuple[float, float]:
    """The shift ``s = R(angle)^-1 t`` that, applied before the turn, gives the true shift
    ``t`` (the inverse of :func:`truth_from_shift_then_turn`)."""
    a = math.radians(angle)
    return math.cos(a) * tx - math.sin(a) * ty, math.sin(a) * tx + math.cos(a) * ty


def _grey(path: Path) -> np.ndarray:
    img = skio.imread(path)
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3]) if img.shape[-1] in (3, 4) else img[..., 0]
    img = util.img_as_float(img)
    lo, hi = float(img.min()), float(img.max())
    return ((img - lo) / (hi - lo) if hi > 1.0 or lo < 0.0 else img).astype(np.float64)


def _textured(patch: np.ndarray, disc: np.ndarray) -> bool:
    sobel = filters.sobel(patch)
    lo, hi = np.percentile(patch[disc], [5, 95])
    return bool(sobel[disc].mean() >= MIN_SOBEL and hi - lo >= MIN_SPREAD)


def _noisy(patch: np.ndarray, spec: str, rng: np.random.Generator) -> np.ndarray:
    noise = parse_noise(spec)
    if noise.kind == "clean":
        return patch.copy()
    if noise.kind == "gaussian":
        return util.random_noise(patch, mode="gaussian", var=patch.var() / noise.level,
                                 rng=rng)
    if noise.kind != "saltpepper":
        raise InputError(f"the independent generator has no '{spec}' noise")
    salted = util.random_noise(patch, mode="salt", amount=noise.level, rng=rng)
    return util.random_noise(salted, mode="pepper", amount=noise.level, rng=rng)


def independent_pairs(
    images: str | Path | Sequence[str | Path],
    n: int,
    size: int = 128,
    noise: str = "clean",
    max_shift: int = 10,
    seed: int = 0,
    split: str = "test",
    tries: int = 50,
) -> Pairs:
    """``n`` seeded pairs with their truth (see module doc) from the photographs of ``split``."""
    paths = list_images(images) if isinstance(images, (str, Path)) else [Path(p) for p in images]
    paths = sorted(select_split(paths, split))
    if not paths:
        raise InputError(f"no photographs in the {split} split", images)
    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng([seed, 1])
    half = size // 2
    # the window: the patch's corners after any turn of a patch moved by up to max_shift
    pad = math.ceil(math.sqrt(2.0) * (half + max_shift)) + 4
    yy, xx = np.mgrid[:size, :size] - half
    disc = np.hypot(yy, xx) <= half - max_shift
    cache: dict[Path, np.ndarray] = {}
    a_out, b_out, truth, used = [], [], [], []
    while len(a_out) < n:
        for _ in range(tries):
            path = paths[rng.integers(len(paths))]
            if path not in cache:
                cache[path] = _grey(path)
            photo = cache[path]
            h, w = photo.shape
            if min(h, w) < 2 * pad + 2:
                continue
            cy, cx = rng.integers(pad, h - pad), rng.integers(pad, w - pad)
            window = photo[cy - pad: cy + pad, cx - pad: cx + pad]  # centre pixel (pad, pad)
            angle = rng.uniform(0.0, 360.0)
            t = rng.integers(-max_shift, max_shift + 1, 2).astype(float)
            sx, sy = shift_for(angle, t[0], t[1])
            moved = ndimage.shift(window, (sy, sx), order=3, mode="mirror")
            turned = transform.rotate(moved, angle, center=(pad, pad), order=3, mode="reflect")
            a = window[pad - half: pad - half + size, pad - half: pad - half + size]
            b = np.clip(turned[pad - half: pad - half + size, pad - half: pad - half + size],
                        0.0, 1.0)
            if _textured(a, disc) and _textured(b, disc):
                break
        else:
            raise InputError(f"found no textured patch in {tries} tries", images)
        a_out.append(_noisy(a, noise, noise_rng))
        b_out.append(_noisy(b, noise, noise_rng))
        truth.append(truth_from_shift_then_turn(angle, sx, sy))
        used.append(path.name)
    angle, tx, ty = (np.array(v, np.float64) for v in zip(*truth, strict=True))
    meta = {"generator": "independent (scikit-image rotate after scipy shift)", "noise": noise,
            "seed": seed, "split": split, "size": size, "max_shift": max_shift,
            "sources": sorted({p.name for p in paths}), "pair_sources": used}
    return Pairs(np.stack(a_out).astype(np.float32), np.stack(b_out).astype(np.float32),
                 angle, tx, ty, meta)


__all__ = ["independent_pairs", "truth_from_shift_then_turn"]
