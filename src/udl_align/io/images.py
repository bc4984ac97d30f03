"""Photographs and ``.npy`` image files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from udl_align.errors import InputError
from udl_align.io.files import PathLike, _reason, _require_file, check_finite

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def list_images(folder: PathLike) -> list[Path]:
    """The PNG/JPEG/TIFF files in ``folder`` and its sub-folders (photo collections such as
    COCO come split into sub-folders; linked sub-folders are followed, each real folder once),
    sorted by relative path.

    Suffixes match case-insensitively; hidden files and folders (such as macOS ``._x.png``)
    are skipped.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError("no such folder", folder)
    if not folder.is_dir():
        raise InputError("not a folder", folder)
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree, or a second link to one folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        here = (Path(root) / f for f in files
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES)
        found += [p for p in here if p.is_file()]
    if not found:
        raise InputError("no PNG/JPEG/TIFF images in this folder or below", folder)
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def image_size(path: PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file's header (nothing decoded)."""
    path = Path(path)
    _require_file(path)
    try:
        with Image.open(path) as img:
            return img.size
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise InputError(f"cannot read image: {_reason(exc)}", path) from exc


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as a 2-D float32 grey array.

    8-bit, RGB(A) and palette images are converted with PIL's "L" conversion and scaled to
    [0, 1]; 16-bit images are scaled by 1/65535; 32-bit integer and float TIFFs keep their
    values. Only the first frame of a multi-page TIFF is read.
    """
    path = Path(path)
    _require_file(path)
    if path.stat().st_size == 0:
        raise InputError("empty file", path)
    try:
        with Image.open(path) as img:
            img.load()  # Image.open is lazy: force decoding so corrupt data fails here
            mode, fmt = img.mode, img.format
            if mode in ("I;16", "I;16L", "I;16B", "I;16N") or (mode == "I" and fmt == "PNG"):
                # 16-bit (older Pillow opens 16-bit PNG as "I"; PNG has no 32-bit grey)
                arr = np.asarray(img).astype(np.float32) / np.float32(65535)
            elif mode in ("I", "F"):
                arr = np.asarray(img).astype(np.float32)
            else:
                arr = np.asarray(img.convert("L")).astype(np.float32) / np.float32(255)
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise InputError(f"cannot read image: {_reason(exc)}", path) from exc
    if arr.ndim != 2:
        raise InputError(f"cannot read image: unexpected shape {arr.shape}", path)
    if arr.size == 0:
        raise InputError("empty image", path)
    check_finite(arr, path)
    return arr


def _check_image_shape(shape: tuple[int, ...], path: Path, what: str) -> None:
    if len(shape) not in (2, 3):
        raise InputError(f"expected a 2-D image or a 3-D stack, got {what} of shape {shape}", path)
    if 0 in shape:
        raise InputError(f"empty {what} (shape {shape})", path)
    if shape[-1] != shape[-2]:
        raise InputError(f"images are not square ({shape[-2]}x{shape[-1]})", path)


def read_npy(path: PathLike) -> np.ndarray:
    """Read a 2-D image or 3-D stack ``(n, N, N)`` from ``.npy`` as float32.

    The file is memory-mapped; a float32 file comes back as a read-only memory map (not loaded),
    any other real dtype as a float32 copy.
    """
    path = Path(path)
    _require_file(path)
    # Checked first: otherwise np.load falls back to unpickling (or to .npz) and says so instead.
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise InputError("not a readable .npy file: no .npy header", path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise InputError(f"not a readable .npy file: {_reason(exc)}", path) from exc
    if arr.dtype.kind not in "iuf":
        raise InputError(f"not a real-valued array (dtype {arr.dtype})", path)
    _check_image_shape(arr.shape, path, "array")
    check_finite(arr, path)
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)
