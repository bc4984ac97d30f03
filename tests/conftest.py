"""Shared fixtures: textured images from scikit-image's bundled photographs (no network)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import color, data

from udl_align import geometry


def grey(name: str) -> np.ndarray:
    img = getattr(data, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img)
    img = img.astype(np.float32)
    return img / img.max()


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    return grey("astronaut")


def cut_pair(image: np.ndarray, cy: int, cx: int, t, n: int = 128):
    """``a``: the patch at (cy, cx); ``b``: the same patch of the whole image transformed by t
    about the patch centre (real content in the corners), so ``apply(a, t) ~ b``."""
    big = image[cy - n : cy + n, cx - n : cx + n]  # its centre pixel is (n, n)
    lo = n - n // 2  # so the crop's centre pixel n // 2 is big's centre, for odd n too
    b = geometry.apply(big, t)[lo : lo + n, lo : lo + n]
    return big[lo : lo + n, lo : lo + n].copy(), b


@pytest.fixture(scope="session")
def textured_pairs(photo):
    """Clean textured pairs, including angles near 0, 90, 180 and 359, fractional shifts."""
    rng = np.random.default_rng(7)
    angles = [0.0, 0.4, 90.0, 180.0, 359.3, 17.5, 233.9, 301.2]
    a, b, truth = [], [], []
    for i, ang in enumerate(angles):
        cy, cx = rng.integers(140, 370, 2)
        tx, ty = (rng.uniform(-8, 8, 2) if i % 2 else rng.integers(-8, 9, 2)).astype(float)
        pa, pb = cut_pair(photo, int(cy), int(cx), (ang, tx, ty))
        a.append(pa)
        b.append(pb)
        truth.append((ang, tx, ty))
    return np.stack(a), np.stack(b), np.array(truth)


def blob_average(n: int = 64) -> np.ndarray:
    """A class-average-like picture: an asymmetric blob on a grey background, with noise."""
    yy, xx = geometry.centred_grid(n)
    img = 0.4 + 0.5 * np.exp(-((xx - 4) ** 2 / 60 + (yy + 2) ** 2 / 150))
    img += 0.3 * np.exp(-((xx + 6) ** 2 + (yy - 8) ** 2) / 12)
    return (img + 0.01 * np.random.default_rng(0).standard_normal((n, n))).astype(np.float32)
