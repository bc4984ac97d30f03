"""Shared fixtures: textured images from scikit-image's bundled photographs (no network)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
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


PHOTOS = ("astronaut", "camera", "coffee", "chelsea")


def save_photos(folder):
    """Four of scikit-image's photographs as 8-bit grey PNGs in ``folder``; returns it."""
    for name in PHOTOS:
        Image.fromarray((grey(name) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """A folder of photographs, as a user's ``--images DIR``."""
    return save_photos(tmp_path_factory.mktemp("photos"))


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


#: where an MRC header keeps its map ID ("MAP ", bytes 208-211) and machine stamp (212-215)
MAP_ID_AT, STAMP_AT = 208, 212
#: the machine stamp an old Chimera wrote (mrcfile does not recognise it)
CHIMERA_STAMP = bytes([0x00, 0x00, 0x44, 0x44])


def patched(src, dst, offset: int, data: bytes):
    """A copy of the file ``src`` at ``dst`` with ``data`` written over the bytes at
    ``offset`` (to damage an MRC header as files from the field are damaged)."""
    raw = bytearray(src.read_bytes())
    raw[offset : offset + len(data)] = data
    dst.write_bytes(bytes(raw))
    return dst


def write_cs(path, stack: bytes, n: int, size: int, psize=1.5, ctf: bool = True):
    """A cryoSPARC particle file (a numpy structured array saved with np.save): ``n``
    particles, images 0..n-1 of ``stack`` (``blob/path``), with ``psize`` (a scalar or one per
    particle), and the CTF fields when ``ctf``."""
    fields = [("uid", "<u8"), ("blob/path", f"S{len(stack)}"), ("blob/idx", "<u4"),
              ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4"), ("blob/sign", "<f4"),
              ("alignments2D/pose", "<f4"), ("alignments2D/shift", "<f4", (2,))]
    if ctf:
        fields += [("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"),
                   ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"),
                   ("ctf/phase_shift_rad", "<f4")]
    arr = np.zeros(n, dtype=fields)
    arr["uid"] = np.arange(n) + 10**18
    arr["blob/path"] = stack
    arr["blob/idx"] = np.arange(n)
    arr["blob/shape"] = size
    arr["blob/psize_A"] = psize
    arr["blob/sign"] = -1.0
    if ctf:
        arr["ctf/accel_kv"], arr["ctf/cs_mm"], arr["ctf/amp_contrast"] = 300.0, 2.7, 0.1
        arr["ctf/df1_A"] = 15000.0 + 100 * np.arange(n)
        arr["ctf/df2_A"] = 14500.0 + 100 * np.arange(n)
        arr["ctf/df_angle_rad"] = np.pi / 4
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, arr)
    return path
