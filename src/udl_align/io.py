"""Reading and writing every file the package touches, with validation.

Every reader checks what it loads and raises :class:`~udl_align.errors.InputError` with a one-line
message ("path: problem") on bad input, so the CLI can report it and exit 2. Every writer goes
through :func:`atomic_output`, so a failed run never leaves a partial file behind.

File formats are described in ``docs/interfaces.md`` (pairs ``.npz``, estimates ``.csv``) and
``docs/conventions.md`` (RELION STAR files).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import pandas as pd
import starfile
from mrcfile import utils as mrc_utils
from mrcfile.dtypes import HEADER_DTYPE
from PIL import Image

from udl_align.errors import InputError, warn_input

PathLike = str | os.PathLike

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

# Blocks of images checked at a time, so that a memory-mapped file is never loaded whole.
_CHUNK = 1024


def _reason(exc: BaseException) -> str:
    """A one-line description of an exception from a library, for an InputError message."""
    text = str(exc).strip().splitlines()
    return text[0].strip() if text and text[0].strip() else type(exc).__name__


def _require_file(path: Path) -> None:
    """Fail early with a clear message, rather than with whatever the library says."""
    if not path.exists():
        raise InputError("no such file", path)
    if not path.is_file():
        raise InputError("not a file", path)


def check_finite(array: np.ndarray, path: PathLike | None, what: str = "pixels") -> None:
    """Raise InputError "contains NaN or Inf <what>" unless every value of ``array`` is finite.

    Works block by block along the first axis, so a memory-mapped array is not loaded at once.
    """
    arr = np.asarray(array) if not isinstance(array, np.ndarray) else array
    if arr.dtype.kind in "iub":  # integers and booleans are always finite
        return
    if arr.ndim == 0:
        ok = bool(np.isfinite(arr))
    else:
        ok = all(
            np.isfinite(arr[i : i + _CHUNK]).all() for i in range(0, arr.shape[0], _CHUNK)
        )
    if not ok:
        raise InputError(f"contains NaN or Inf {what}", path)


# --------------------------------------------------------------------------------------------
# Atomic output
# --------------------------------------------------------------------------------------------


def check_writable(path: PathLike) -> Path:
    """Fail early, with one line, when ``path`` cannot be written (commands call this before
    doing any work, so none is wasted on an output that cannot be saved)."""
    path = Path(path)
    parent = path.parent
    try:
        if not parent.exists():
            raise InputError("output directory does not exist", parent)
        if not parent.is_dir():
            raise InputError("output directory is not a folder", parent)
        if path.is_dir():
            raise InputError("cannot write here: is a folder", path)
        if not os.access(parent, os.W_OK):
            raise InputError("cannot write here: permission denied", path)
    except OSError as exc:  # e.g. a name too long for the file system
        raise InputError(f"cannot write here: {_reason(exc)}", path) from exc
    return path


def check_out_dir(path: PathLike) -> Path:
    """Fail early, with one line, when the folder ``path`` cannot be made or written in
    (commands with an output folder call this before doing any work).

    Nothing is left behind: where ``path`` exists it must be a folder in which a file can be
    created (a nameless temporary one, gone when closed); where it does not, the same holds
    for the nearest folder above it that exists, in which it would be made.
    """
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path.cwd())
    try:
        if not existing.is_dir():
            where = "" if existing == path else f" ({existing} is a file)"
            raise InputError(f"output directory is not a folder{where}", path)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        what = "cannot write in the output folder" if existing == path \
            else "cannot make the output folder"
        raise InputError(f"{what}: {exc.strerror or _reason(exc)}", path) from exc
    return path


def settle(written: Path, path: Path) -> None:
    """Move a finished file onto ``path``, flushed to disk first (so a crash cannot leave an
    empty file under ``path``)."""
    fd = os.open(written, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(written, path)
    except OSError as exc:
        raise InputError(f"cannot write here: {_reason(exc)}", path) from exc


#: errors of the place written to, not of the program: reported as bad input (one line)
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG, errno.EIO)


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    The temporary file is created (empty) before the body runs, so a folder we cannot write to
    fails here with a clear message. Its name keeps ``path``'s suffix at the end
    (``.name.tmp-PID-RANDOM.suffix``) because some writers (``np.savez``) act on the suffix.
    On any exception the temporary file is removed and the exception re-raised.
    """
    path = check_writable(path)
    parent = path.parent
    stem = path.name[: len(path.name) - len(path.suffix)] if path.suffix else path.name
    tmp = parent / f".{stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}"
    try:
        # "x": never clobber someone else's file; open() (not mkstemp) keeps the usual umask mode.
        with open(tmp, "xb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write here: {_reason(exc)}", path) from exc
    try:
        yield tmp
        settle(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            # the disk filled up (or the like) while writing: one line, nothing left behind
            raise InputError(f"cannot write here: {_reason(exc)}", path) from exc
        raise


# --------------------------------------------------------------------------------------------
# Images (PNG / JPEG / TIFF)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# .npy
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# MRC
# --------------------------------------------------------------------------------------------


_ORDER_NAME = {"<": "little-endian", ">": "big-endian"}


@dataclass(frozen=True)
class MrcHeader:
    """What an MRC file's header says, checked against the file.

    ``shape``: the data's shape as ``mrcfile`` gives it (``(ny, nx)`` for a single image marked
    as a stack, else ``(nz, ny, nx)``, or 4-D for a stack of volumes); ``dtype``: the data's
    type in the file's byte order; ``offset``: bytes before the data (1024 plus the extended
    header); ``voxel_size``: ``cella.x / mx`` in Angstrom, 0 when the header has none;
    ``ispg``: the space group (0 marks an image stack); ``notes``: what was non-standard.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    voxel_size: float
    ispg: int
    notes: tuple[str, ...] = ()

    @property
    def is_volume(self) -> bool:
        """A 3-D file whose space group is not 0 (``mrcfile``'s ``is_volume``)."""
        return len(self.shape) == 3 and self.ispg != 0


def _layout(raw: bytes, order: str, file_size: int) -> tuple[MrcHeader | None, str, int]:
    """The header ``raw`` read in byte ``order``: ``(header, "", bytes after the data)``, or
    ``(None, problem, 0)`` when it does not describe a file of ``file_size`` bytes."""
    fields = HEADER_DTYPE.newbyteorder(order)
    header = np.frombuffer(raw, dtype=fields).reshape(()).view(np.recarray)
    nx, ny, nz, nsymbt = (int(header[k]) for k in ("nx", "ny", "nz", "nsymbt"))
    mode = int(header.mode)
    try:
        dtype = mrc_utils.dtype_from_mode(mode).newbyteorder(order)
    except ValueError:
        return None, f"unknown data mode {mode}", 0
    if min(nx, ny, nz, nsymbt) < 0:
        return None, (f"bad header: negative size (nx {nx}, ny {ny}, nz {nz}, extended header "
                      f"{nsymbt} bytes)"), 0
    try:
        shape = tuple(int(d) for d in mrc_utils.data_shape_from_header(header))
    except ZeroDivisionError:  # a stack of volumes (space group 401-630) with mz 0
        return None, "bad header: a stack of volumes with mz 0", 0
    offset = HEADER_DTYPE.itemsize + nsymbt
    needed = offset + nx * ny * nz * dtype.itemsize
    if needed > file_size:
        return None, (f"truncated: the header says {needed} bytes, the file holds "
                      f"{file_size}"), 0
    mx, cell = int(header.mx), float(header.cella.x)
    voxel = cell / mx if mx > 0 else 0.0
    voxel = voxel if np.isfinite(voxel) and voxel > 0 else 0.0
    return MrcHeader(shape, dtype, offset, voxel, int(header.ispg)), "", file_size - needed


def read_mrc_header(path: PathLike) -> MrcHeader:
    """Read and check an MRC file's header (nothing of the data is read).

    The checks are those of ``mrcfile``'s strict reading, made here so that a file it refuses
    for a non-essential reason is still read, as RELION, cryoDRGN and ASPIRE read it (and
    ``mrcfile`` in permissive mode): a missing map ID ("MAP "), an unrecognised machine stamp,
    or bytes after the data. Such a file is read with one
    :class:`~udl_align.errors.InputWarning` naming what was non-standard. The byte order is
    the machine stamp's; where the stamp is unrecognised, or the header makes sense only in
    the other order (a known data mode, sizes that fit the file), the order in which it makes
    sense (little-endian where both do).

    Raises InputError "not a readable MRC file: ..." for what cannot be read: shorter than a
    header, an unknown data mode, negative sizes, or fewer bytes than the header says
    (truncated).
    """
    path = Path(path)
    _require_file(path)
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(HEADER_DTYPE.itemsize)
    if len(raw) < HEADER_DTYPE.itemsize:
        raise InputError(f"not a readable MRC file: {len(raw)} bytes, shorter than an MRC "
                         f"header ({HEADER_DTYPE.itemsize})", path)
    notes = []
    if raw[208:211] != b"MAP":  # mrcfile checks the first three bytes of "MAP "
        notes.append("map ID string missing")
    stamp = np.frombuffer(raw[212:216], np.uint8)
    try:
        stated: str | None = mrc_utils.byte_order_from_machine_stamp(stamp)
    except ValueError:
        stated = None
    first = stated or "<"
    candidates = [(order, *_layout(raw, order, file_size)) for order in (first, "<>"[first == "<"])]
    fits = [c for c in candidates if c[1] is not None]
    if stated is None:  # no stated order: an exact fit first, then little-endian
        fits.sort(key=lambda c: (c[3] != 0, c[0] != "<"))
    if not fits:
        reason = candidates[0][2]
        if notes:
            reason += f" ({notes[0]})"
        raise InputError(f"not a readable MRC file: {reason}", path)
    order, header, _, extra = fits[0]
    pretty = mrc_utils.pretty_machine_stamp(stamp)
    if stated is None:
        notes.append(f"machine stamp {pretty} unrecognised, read as {_ORDER_NAME[order]}")
    elif order != stated:
        notes.append(f"machine stamp {pretty} says {_ORDER_NAME[stated]} but the header makes "
                     f"sense only as {_ORDER_NAME[order]}, read so")
    if extra:
        notes.append(f"{extra} bytes after the data, ignored")
    if notes:
        warn_input(f"non-standard MRC file, read anyway: {'; '.join(notes)}", path)
    return replace(header, notes=tuple(notes))


class MrcStack:
    """A lazily read MRC image stack; a 2-D MRC is a stack of one.

    ``stack[i]`` gives an ``(N, N)`` float32 copy; ``stack[slice]`` or ``stack[int_array]`` a
    ``(k, N, N)`` copy, whatever the file's data type (float16 and integer modes included).
    A 3-D file whose header marks it as a volume (space group not 0) and whose suffix is not
    ``.mrcs`` is refused unless ``allow_volume``, since its sections are not separate
    particle images.

    The header is checked by :func:`read_mrc_header` (a non-standard but readable file is read,
    with one warning); images are then read with plain file reads, not through a memory map:
    pages of a map that were read count as resident memory, so streaming through a large
    stack would look like (and, under pressure, act like) memory growing with the stack.
    """

    def __init__(self, path: PathLike, allow_volume: bool = False) -> None:
        self.path = Path(path)
        self._validate(read_mrc_header(self.path), allow_volume)
        self._file = open(self.path, "rb")  # closed by close()

    def _validate(self, header: MrcHeader, allow_volume: bool) -> None:
        shape = header.shape
        if 0 in shape:
            raise InputError("empty MRC", self.path)
        if header.dtype.kind not in "iuf":
            raise InputError(f"MRC data is not real-valued (dtype {header.dtype})", self.path)
        if len(shape) not in (2, 3):
            raise InputError(f"expected a 2-D image or a stack, got shape {shape}", self.path)
        if shape[-1] != shape[-2]:
            raise InputError(f"images are not square ({shape[-2]}x{shape[-1]})", self.path)
        if header.is_volume and self.path.suffix.lower() != ".mrcs" and not allow_volume:
            raise InputError("is a 3-D volume, expected a 2-D image or a stack", self.path)
        self._shape = (shape[0] if len(shape) == 3 else 1, shape[-2], shape[-1])
        self._dtype = header.dtype
        self._offset = header.offset
        self._pixel_size = header.voxel_size if header.voxel_size > 0 else 1.0

    @property
    def n(self) -> int:
        """Number of images."""
        return int(self._shape[0])

    @property
    def size(self) -> int:
        """Image side N in pixels."""
        return int(self._shape[-1])

    @property
    def pixel_size(self) -> float:
        """Pixel size in Angstrom from the header (voxel_size.x); 1.0 when the header has 0."""
        return self._pixel_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> np.ndarray:
        out = self.raw(index)
        check_finite(out, self.path)
        return out

    def raw(self, index: Any) -> np.ndarray:
        """Like ``stack[index]`` but without the NaN/Inf check: for particle stacks, whose
        bad images are skipped and counted rather than fatal."""
        picked = np.arange(self.n)[index]
        single = picked.ndim == 0
        picked = np.atleast_1d(picked)
        out = np.empty((len(picked), self._shape[1], self._shape[2]), np.float32)
        per_image = self._shape[1] * self._shape[2]
        # consecutive indices are read in one go
        breaks = np.nonzero(np.diff(picked) != 1)[0] + 1
        for run, first in zip(np.split(np.arange(len(picked)), breaks),
                              picked[np.r_[0, breaks]], strict=True):
            self._file.seek(self._offset + int(first) * per_image * self._dtype.itemsize)
            block = np.fromfile(self._file, dtype=self._dtype, count=len(run) * per_image)
            if block.size != len(run) * per_image:
                raise InputError("is truncated (fewer bytes than its header says)", self.path)
            out[run[0] : run[-1] + 1] = block.reshape(len(run), *self._shape[1:])
        return out[0] if single else out

    def close(self) -> None:
        """Release the file."""
        self._file.close()

    def __enter__(self) -> MrcStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_mrc(path: PathLike) -> np.ndarray:
    """Read a whole MRC file (a map, a reference image or a small stack) as float32, in the
    shape :class:`MrcHeader` gives. The header is checked by :func:`read_mrc_header` (a
    non-standard but readable file is read, with one warning)."""
    path = Path(path)
    header = read_mrc_header(path)
    if 0 in header.shape:
        raise InputError("empty MRC", path)
    if header.dtype.kind not in "iuf":
        raise InputError(f"MRC data is not real-valued (dtype {header.dtype})", path)
    count = int(np.prod(header.shape))
    try:
        data = np.fromfile(path, dtype=header.dtype, count=count, offset=header.offset)
    except OSError as exc:
        raise InputError(f"not a readable MRC file: {_reason(exc)}", path) from exc
    if data.size != count:  # the file shrank after its header was read
        raise InputError("not a readable MRC file: truncated", path)
    arr = data.reshape(header.shape).astype(np.float32)
    check_finite(arr, path)
    return arr


def write_mrc(
    path: PathLike, data: np.ndarray, pixel_size: float = 1.0, stack: bool = True
) -> None:
    """Write ``data`` (2-D image or 3-D array) as float32 MRC with the given pixel size (A).

    A 3-D array is marked as an image stack (space group 0) when ``stack``, else as a volume.
    """
    arr = np.ascontiguousarray(data, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise ValueError(f"write_mrc needs a 2-D or 3-D array, got shape {arr.shape}")
    with atomic_output(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(arr)
        mrc.voxel_size = float(pixel_size)
        if arr.ndim == 3:
            if stack:
                mrc.set_image_stack()
            else:
                mrc.set_volume()


@contextlib.contextmanager
def all_or_nothing() -> Iterator[list[Path]]:
    """For commands with several outputs: append each finished output's path to the yielded
    list; if the block fails, those files are removed again, so no partial output remains."""
    finished: list[Path] = []
    try:
        yield finished
    except BaseException:
        for path in finished:
            with contextlib.suppress(OSError):
                Path(path).unlink()
        raise


@contextlib.contextmanager
def mrc_stack_writer(path: PathLike, n: int, size: int, pixel_size: float,
                     work: PathLike | None = None, resume_at: int = 0):
    """Write an ``(n, size, size)`` float32 MRC stack piece by piece: yields
    ``put(start, block)``. Blocks go to the file with plain writes (no memory map whose dirty
    pages would count as resident), so memory does not grow with ``n``; the header statistics
    are kept as we go. The file appears under ``path`` only when the body finishes (see
    :func:`atomic_output`).

    ``work``: the file is written there instead of a throw-away temporary file, so it
    survives a crash, and a later call with ``resume_at=k`` keeps its first ``k`` images and
    goes on (their statistics are read back); at the end it is renamed onto ``path``."""
    if work is None:
        with atomic_output(path) as tmp, _stack_file(tmp, n, size, pixel_size, 0) as put:
            yield put
        return
    work, path = Path(work), check_writable(path)
    try:
        with _stack_file(work, n, size, pixel_size, resume_at) as put:
            yield put
        settle(work, path)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:  # as atomic_output: one line
            raise InputError(f"cannot write here: {_reason(exc)}", path) from exc
        raise


@contextlib.contextmanager
def _stack_file(path: Path, n: int, size: int, pixel_size: float, resume_at: int):
    if resume_at == 0 or not Path(path).exists():
        resume_at = 0
        with mrcfile.new_mmap(path, shape=(n, size, size), mrc_mode=2, overwrite=True) as mrc:
            mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size)
    with mrcfile.mmap(path, mode="r") as mrc:  # header only
        offset = mrc.header.nbytes + mrc.extended_header.nbytes
        dtype = mrc.data.dtype
    stats = {"min": np.inf, "max": -np.inf, "sum": 0.0, "sq": 0.0, "count": 0}

    def count(block: np.ndarray) -> None:
        stats["min"] = min(stats["min"], float(block.min()))
        stats["max"] = max(stats["max"], float(block.max()))
        for image in block.reshape(len(block), -1):  # per image: no float64 temporaries
            stats["sum"] += float(image.sum())
            stats["sq"] += float(np.dot(image, image))
        stats["count"] += block.size

    with open(path, "r+b") as f:
        for first in range(0, resume_at, 256):  # what a resumed file already holds
            f.seek(offset + first * size * size * dtype.itemsize)
            k = min(256, resume_at - first)
            count(np.fromfile(f, dtype=dtype, count=k * size * size).reshape(k, size, size))

        def put(start: int, block: np.ndarray) -> None:
            block = np.ascontiguousarray(block, dtype=dtype)
            if block.shape[1:] != (size, size) or start + len(block) > n:
                raise ValueError(f"block {block.shape} at {start} does not fit ({n}, "
                                 f"{size}, {size})")
            f.seek(offset + start * size * size * dtype.itemsize)
            block.tofile(f)  # no temporary copy: big short-lived buffers fragment the heap
            count(block)

        yield put
    with mrcfile.mmap(path, mode="r+") as mrc:  # header only: no data page is touched
        total = max(stats["count"], 1)
        mean = stats["sum"] / total
        mrc.header.dmin, mrc.header.dmax = stats["min"], stats["max"]
        mrc.header.dmean = mean
        mrc.header.rms = np.sqrt(max(stats["sq"] / total - mean * mean, 0.0))


# --------------------------------------------------------------------------------------------
# STAR (RELION)
# --------------------------------------------------------------------------------------------


@dataclass
class ParticlesTable:
    """The particles of a RELION STAR file or of a cryoSPARC ``.cs`` file.

    ``data`` is the particles block as starfile reads it (for a ``.cs`` file: the RELION
    columns its fields convert to), plus derived columns: ``stack_path`` (absolute path
    string), ``stack_index`` (0-based), ``origin_x_px``, ``origin_y_px`` (RELION's origin
    offsets, in pixels), ``psi`` (degrees) and ``pixel_size`` (each particle's, Angstrom; NaN
    where the file gives none). ``optics`` is the optics block (RELION 3.1+ and ``.cs``
    files; None for older STAR files). ``pixel_size`` is the pixel size of most particles
    (None where the file gives none); ``image_size`` the image side the file states, if any.
    """

    data: pd.DataFrame
    pixel_size: float | None
    image_size: int | None
    optics: pd.DataFrame | None = None

    @property
    def n(self) -> int:
        """Number of particles."""
        return len(self.data)

    @property
    def pixel_sizes(self) -> np.ndarray:
        """Each particle's pixel size in Angstrom (NaN where the file gives none)."""
        return self.data["pixel_size"].to_numpy(np.float64)


_IMAGE_NAME = re.compile(r"^\s*0*([1-9]\d*)@(.+?)\s*$")


def _as_frame(block: Any) -> pd.DataFrame | None:
    """starfile gives a dict for a block written without ``loop_`` (a single row)."""
    if isinstance(block, pd.DataFrame):
        return block
    if isinstance(block, Mapping) and block:
        return pd.DataFrame([dict(block)])
    return None


def _numeric_column(df: pd.DataFrame, name: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise InputError(f"column {name} is not numeric", path)
    check_finite(values, path, f"values in {name}")
    return values


def _single_value(values: np.ndarray, what: str, path: Path) -> float:
    unique = np.unique(values)
    if len(unique) > 1:
        shown = ", ".join(f"{v:g}" for v in unique[:4])
        raise InputError(f"particles differ in {what} ({shown}); split the file", path)
    return float(unique[0])


def _check_pixel_size(value: float, path: Path) -> float:
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"bad pixel size {value:g}", path)
    return value


def _resolve_stack(name: str, star_dir: Path) -> str:
    """Stacks are named relative to the STAR file's folder or (as RELION does) the project
    folder, usually the current one: try them in that order."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return str(p)
    beside = star_dir / p
    if not beside.exists() and p.exists():
        return str(p.resolve())
    return str(beside.resolve())


def _most_common(values: np.ndarray) -> float | None:
    """The most frequent of the non-NaN ``values`` (the smallest of a tie), None if none."""
    known = values[~np.isnan(values)]
    if len(known) == 0:
        return None
    unique, counts = np.unique(known, return_counts=True)
    return float(unique[np.argmax(counts)])


def _checked_pixel_sizes(values: np.ndarray, path: Path) -> np.ndarray:
    for value in np.unique(values[~np.isnan(values)]):
        _check_pixel_size(float(value), path)
    return values


def read_particles_star(path: PathLike) -> ParticlesTable:
    """Read the particles of a RELION STAR file: RELION 3.1 to 5 (``data_optics`` and
    ``data_particles``, any number of optics groups, extra blocks and columns tolerated) or
    older (one block naming images).

    Pixel size, per particle: 3.1+ from its optics group (``rlnImagePixelSize``); older files
    from ``rlnPixelSize``, else ``rlnDetectorPixelSize * 1e4 / rlnMagnification``, else none.
    Origins come from ``rlnOriginXAngst``/``rlnOriginYAngst`` (divided by the particle's pixel
    size) or ``rlnOriginX``/``rlnOriginY`` (pixels), 0 if absent. The images must be 2-D
    (``rlnImageDimensionality`` 2 where given) and of one size (``rlnImageSize``). Does not
    check that the stacks exist (see :func:`check_stacks_exist`).
    """
    path = Path(path)
    _require_file(path)
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnImageName"])
    except Exception as exc:
        raise InputError(f"not a readable STAR file: {_reason(exc)}", path) from exc

    optics = _as_frame(blocks.get("optics"))
    if "particles" in blocks:
        particles = _as_frame(blocks["particles"])
    else:
        # Pre-3.1: one unnamed block (or any block naming images).
        frames = [f for f in (_as_frame(b) for b in blocks.values()) if f is not None]
        with_names = [f for f in frames if "rlnImageName" in f.columns]
        particles = with_names[0] if with_names else (frames[0] if frames else None)
        optics = None
    if particles is None or len(particles) == 0:
        raise InputError("no particles in this STAR file", path)
    if "rlnImageName" not in particles.columns:
        raise InputError("missing column rlnImageName", path)
    df = particles.reset_index(drop=True).copy()

    # Pixel size (per particle) and image size.
    pixel = np.full(len(df), np.nan)
    image_size: int | None = None
    if optics is not None:
        if "rlnOpticsGroup" in df.columns and "rlnOpticsGroup" in optics.columns:
            groups = optics.set_index(pd.to_numeric(optics["rlnOpticsGroup"], errors="coerce"))
            wanted = pd.to_numeric(df["rlnOpticsGroup"], errors="coerce")
            missing = sorted(set(wanted.unique()) - set(groups.index))
            if missing:
                raise InputError(f"rlnOpticsGroup {missing[0]} is not in the optics block", path)
            rows = groups.loc[wanted.to_numpy()].reset_index(drop=True)
        elif len(optics) == 1:
            rows = optics.iloc[[0] * len(df)].reset_index(drop=True)  # one group: everyone's
        else:
            raise InputError("missing column rlnOpticsGroup (several optics groups)", path)
        if "rlnImageDimensionality" in rows.columns:
            dims = _numeric_column(rows, "rlnImageDimensionality", path)
            if (dims != 2).any():
                raise InputError(f"rlnImageDimensionality {dims[dims != 2][0]:g}: expected "
                                 "2-D particle images", path)
        if "rlnImagePixelSize" in rows.columns:
            pixel = _numeric_column(rows, "rlnImagePixelSize", path)
        if "rlnImageSize" in rows.columns:
            values = _numeric_column(rows, "rlnImageSize", path)
            image_size = int(_single_value(values, "image size", path))
    elif "rlnPixelSize" in df.columns:
        pixel = _numeric_column(df, "rlnPixelSize", path)
    elif "rlnDetectorPixelSize" in df.columns and "rlnMagnification" in df.columns:
        # Detector pixel in micrometres, magnification dimensionless: 1 um = 1e4 A.
        pixel = _numeric_column(df, "rlnDetectorPixelSize", path) * 1e4 / _numeric_column(
            df, "rlnMagnification", path
        )
    df["pixel_size"] = _checked_pixel_sizes(pixel, path)

    # Image names: "index@stack", index 1-based.
    names = df["rlnImageName"].astype(str)
    parts = names.str.extract(_IMAGE_NAME)
    bad = parts[0].isna()
    if bad.any():
        value = names[bad].iloc[0]
        raise InputError(f"bad rlnImageName '{value}' (expected index@stack)", path)
    df["stack_index"] = parts[0].astype(np.int64) - 1
    star_dir = path.parent
    resolved = {s: _resolve_stack(s, star_dir) for s in parts[1].unique()}
    df["stack_path"] = parts[1].map(resolved)

    # Origins (RELION's sense: they translate the particle back to its centre), in pixels.
    for axis in ("X", "Y"):
        angst, pixels = f"rlnOrigin{axis}Angst", f"rlnOrigin{axis}"
        if angst in df.columns:
            if np.isnan(pixel).any():
                raise InputError(f"has {angst} but no pixel size", path)
            origin = _numeric_column(df, angst, path) / pixel
        elif pixels in df.columns:
            origin = _numeric_column(df, pixels, path)
        else:
            origin = np.zeros(len(df))
        df[f"origin_{axis.lower()}_px"] = origin
    df["psi"] = (
        _numeric_column(df, "rlnAnglePsi", path) if "rlnAnglePsi" in df.columns else 0.0
    )
    return ParticlesTable(data=df, pixel_size=_most_common(pixel), image_size=image_size,
                          optics=optics)


def _resolve_cs_stack(name: str, cs_dir: Path) -> str:
    """cryoSPARC names stacks relative to its project folder (``J12/extract/...``): try the
    ``.cs`` file's folder and each folder above it, then the current folder; else the name as
    seen from the ``.cs`` file's folder."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return str(p)
    for folder in (cs_dir, *cs_dir.parents):
        if (folder / p).exists():
            return str((folder / p).resolve())
    if p.exists():
        return str(p.resolve())
    return str((cs_dir / p).resolve())


#: cryoSPARC's CTF fields and the RELION columns they become (with a scale: radians to degrees)
_CS_CTF_COLUMNS = {
    "ctf/df1_A": ("rlnDefocusU", 1.0),
    "ctf/df2_A": ("rlnDefocusV", 1.0),
    "ctf/df_angle_rad": ("rlnDefocusAngle", 180.0 / np.pi),
    "ctf/phase_shift_rad": ("rlnPhaseShift", 180.0 / np.pi),
}
#: cryoSPARC's per-particle optics fields and the RELION optics columns they become
_CS_OPTICS_COLUMNS = {
    "blob/psize_A": "rlnImagePixelSize",
    "ctf/accel_kv": "rlnVoltage",
    "ctf/cs_mm": "rlnSphericalAberration",
    "ctf/amp_contrast": "rlnAmplitudeContrast",
}


def _cs_field(arr: np.ndarray, name: str, path: Path, kinds: str = "iuf") -> np.ndarray:
    values = arr[name]
    if values.dtype.kind not in kinds:
        raise InputError(f"field {name} has an unexpected type ({values.dtype})", path)
    if values.dtype.kind == "f":
        check_finite(values, path, f"values in {name}")
    return values


def read_particles_cs(path: PathLike) -> ParticlesTable:
    """Read the particles of a cryoSPARC ``.cs`` file: a numpy structured array (``np.save``)
    with fields ``blob/path`` (the stack, relative to the cryoSPARC project folder) and
    ``blob/idx`` (0-based), and where present ``blob/psize_A`` (pixel size, Angstrom),
    ``blob/shape`` and ``ctf/...``; other fields (``alignments2D/...``, ...) are not read.
    A leading ``>`` on a path (cryoSPARC's mark of an imported one) is dropped.

    The table holds the RELION columns these convert to: ``rlnImageName`` (``idx+1@path``),
    ``rlnOpticsGroup`` and, from the CTF fields, ``rlnDefocusU``/``V``, ``rlnDefocusAngle``
    and ``rlnPhaseShift`` (degrees); ``optics`` has one group per distinct pixel size,
    voltage, spherical aberration and amplitude contrast. Stacks are looked for as
    :func:`_resolve_cs_stack` says; whether they exist is checked by
    :func:`check_stacks_exist`.
    """
    path = Path(path)
    _require_file(path)
    # Checked first: otherwise np.load falls back to unpickling and says so instead.
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise InputError("not a readable cryoSPARC .cs file: no .npy header", path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"not a readable cryoSPARC .cs file: {_reason(exc)}", path) from exc
    fields = arr.dtype.names or ()
    if arr.ndim != 1 or not fields:
        raise InputError("not a cryoSPARC particle table (no named fields)", path)
    for name in ("blob/path", "blob/idx"):
        if name not in fields:
            raise InputError(f"missing field {name}", path)
    if len(arr) == 0:
        raise InputError("no particles in this .cs file", path)
    n = len(arr)

    stacks = _cs_field(arr, "blob/path", path, "SU")
    if stacks.dtype.kind == "S":
        try:
            stacks = np.char.decode(stacks, "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"field blob/path is not UTF-8 text: {_reason(exc)}", path) from exc
    # a leading ">" marks a path cryoSPARC imported: the path is what follows
    stacks = np.array([str(v).strip().removeprefix(">") for v in stacks])
    index = _cs_field(arr, "blob/idx", path, "iu").astype(np.int64)
    if (index < 0).any():
        raise InputError(f"bad blob/idx {index[index < 0][0]} (expected 0 or more)", path)
    image_size: int | None = None
    if "blob/shape" in fields:
        shape = _cs_field(arr, "blob/shape", path, "iu").reshape(n, -1)
        unique = np.unique(shape, axis=0)
        if len(unique) > 1:
            shown = ", ".join("x".join(str(int(v)) for v in u) for u in unique[:4])
            raise InputError(f"particles differ in image size ({shown}); split the file", path)
        if unique.shape[1] != 2 or unique[0, 0] != unique[0, 1]:
            raise InputError(f"images are not square (blob/shape {list(unique[0])})", path)
        image_size = int(unique[0, 0])

    # One optics group per distinct combination of the optics fields present.
    optical = [(f, c) for f, c in _CS_OPTICS_COLUMNS.items() if f in fields]
    values = np.stack([_cs_field(arr, f, path).astype(np.float64).reshape(n)
                       for f, _ in optical] or [np.zeros(n)], 1)
    combos, group = np.unique(values, axis=0, return_inverse=True)
    group = np.asarray(group).reshape(n) + 1
    optics = pd.DataFrame({"rlnOpticsGroup": np.arange(1, len(combos) + 1),
                           "rlnOpticsGroupName": [f"opticsGroup{i}"
                                                  for i in range(1, len(combos) + 1)]})
    for k, (_, column) in enumerate(optical):
        optics[column] = combos[:, k]
    optics["rlnImageDimensionality"] = 2
    if image_size is not None:
        optics["rlnImageSize"] = image_size
    pixel = (_cs_field(arr, "blob/psize_A", path).astype(np.float64).reshape(n)
             if "blob/psize_A" in fields else np.full(n, np.nan))

    names = [f"{i + 1}@{s}" for i, s in zip(index, stacks, strict=True)]
    df = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": group})
    for name, (column, scale) in _CS_CTF_COLUMNS.items():
        if name in fields:
            df[column] = _cs_field(arr, name, path).astype(np.float64).reshape(n) * scale
    df["pixel_size"] = _checked_pixel_sizes(pixel, path)
    df["stack_index"] = index
    cs_dir = path.parent.resolve()
    resolved = {s: _resolve_cs_stack(s, cs_dir) for s in np.unique(stacks)}
    df["stack_path"] = [resolved[s] for s in stacks]
    df["origin_x_px"] = df["origin_y_px"] = df["psi"] = 0.0
    return ParticlesTable(data=df, pixel_size=_most_common(pixel), image_size=image_size,
                          optics=optics)


def check_stacks_exist(table: ParticlesTable, path: PathLike) -> None:
    """Raise InputError "names a missing stack: <name>" if a stack of ``table`` is not a file."""
    df = table.data
    firsts = df.drop_duplicates("stack_path")
    for stack_path, image_name in zip(firsts["stack_path"], firsts["rlnImageName"], strict=True):
        if not Path(stack_path).is_file():
            name = str(image_name).split("@", 1)[-1].strip()
            raise InputError(f"names a missing stack: {name}", path)


def _column(values: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    return arr


def write_particles_star(
    path: PathLike,
    image_names: Any,
    psi: Any,
    origin_x_px: Any,
    origin_y_px: Any,
    pixel_size: Any,
    image_size: int,
    extra: dict[str, np.ndarray] | None = None,
    optics_extra: dict[str, float] | None = None,
    optics: pd.DataFrame | None = None,
    optics_group: Any = 1,
) -> None:
    """Write a RELION 3.1 particles STAR file.

    ``image_names`` are ``index@stack`` strings (1-based); ``psi`` in degrees; origins in pixels
    in RELION's sense (written as ``rlnOriginXAngst = origin_x_px * pixel_size``, with each
    particle's pixel size where ``pixel_size`` is an array). ``extra`` adds columns (e.g.
    ``rlnMaxValueProbDistribution``). Scalars are broadcast.
    Without ``optics``: one optics group per distinct pixel size (so one for a scalar), and
    ``optics_group`` is not used. With ``optics`` (an input file's optics block, kept with all
    its columns and groups), ``optics_group`` gives each particle's ``rlnOpticsGroup``.
    ``optics_extra`` adds optics-group columns (e.g. ``rlnVoltage``).
    """
    names = [str(s) for s in np.atleast_1d(np.asarray(image_names))]
    n = len(names)
    pixel = _column(pixel_size, n, "pixel_size").astype(np.float64)
    if optics is None:
        sizes, index = np.unique(pixel, return_inverse=True)
        optics = pd.DataFrame({
            "rlnOpticsGroup": np.arange(1, len(sizes) + 1),
            "rlnOpticsGroupName": [f"opticsGroup{i}" for i in range(1, len(sizes) + 1)],
            "rlnImagePixelSize": sizes,
        })
        optics_group = np.asarray(index).reshape(n) + 1
    optics = optics.reset_index(drop=True).copy()
    for column, value in (("rlnImagePixelSize", float(_most_common(pixel) or 1.0)),
                          ("rlnImageSize", int(image_size)), ("rlnImageDimensionality", 2),
                          *(optics_extra or {}).items()):
        if column not in optics.columns:
            optics[column] = value
    columns: dict[str, Any] = {
        "rlnImageName": names,
        "rlnAnglePsi": _column(psi, n, "psi").astype(np.float64),
        "rlnOriginXAngst": _column(origin_x_px, n, "origin_x_px").astype(np.float64) * pixel,
        "rlnOriginYAngst": _column(origin_y_px, n, "origin_y_px").astype(np.float64) * pixel,
        "rlnOpticsGroup": _column(optics_group, n, "optics_group").astype(np.int64),
    }
    for name, values in (extra or {}).items():
        if name in columns:
            raise ValueError(f"extra column {name} clashes with a standard column")
        columns[name] = _column(values, n, name)
    particles = pd.DataFrame(columns)
    with atomic_output(path) as tmp:
        starfile.write({"optics": optics, "particles": particles}, tmp)


# --------------------------------------------------------------------------------------------
# Pairs (.npz)
# --------------------------------------------------------------------------------------------


@dataclass
class Pairs:
    """Image pairs ``a[i]``, ``b[i]`` (float32, ``(n, N, N)``) with optional true transforms
    (``angle`` degrees, ``tx``, ``ty`` pixels, each ``(n,)``) such that ``apply(a, T) ~ b``."""

    a: np.ndarray
    b: np.ndarray
    angle: np.ndarray | None = None
    tx: np.ndarray | None = None
    ty: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of pairs."""
        return int(self.a.shape[0])

    @property
    def size(self) -> int:
        """Image side N in pixels."""
        return int(self.a.shape[-1])

    @property
    def has_truth(self) -> bool:
        """Whether the true transforms are known."""
        return self.angle is not None


def _validated_pairs(
    a: Any, b: Any, truth: dict[str, Any], meta: Any, path: Path
) -> Pairs:
    """Check everything interfaces.md promises about a pairs file; raise InputError if not."""
    arrays = {}
    for key, value in (("a", a), ("b", b)):
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            raise InputError(f"array '{key}' is not floating point (dtype {arr.dtype})", path)
        if arr.ndim != 3:
            raise InputError(f"array '{key}' must have shape (n, N, N), got {arr.shape}", path)
        arrays[key] = arr
    a, b = arrays["a"], arrays["b"]
    if a.shape != b.shape:
        raise InputError(f"a and b differ in shape: {a.shape} vs {b.shape}", path)
    if a.shape[0] < 1:
        raise InputError("no pairs (n = 0)", path)
    if a.shape[1] != a.shape[2]:
        raise InputError(f"images are not square ({a.shape[1]}x{a.shape[2]})", path)
    if a.shape[1] < 1:
        raise InputError("empty images (N = 0)", path)
    for key, arr in arrays.items():
        check_finite(arr, path, f"pixels in '{key}'")
    n = a.shape[0]

    present = {k: v for k, v in truth.items() if v is not None}
    if present and "angle" not in present:
        raise InputError(f"has '{sorted(present)[0]}' but no 'angle'", path)
    checked: dict[str, np.ndarray | None] = {"angle": None, "tx": None, "ty": None}
    if present:
        for key in ("angle", "tx", "ty"):
            value = present.get(key, np.zeros(n))  # shifts default to 0 when only angle is given
            arr = np.asarray(value)
            if arr.dtype.kind not in "iuf":
                raise InputError(f"truth '{key}' is not numeric (dtype {arr.dtype})", path)
            if arr.shape != (n,):
                raise InputError(f"truth '{key}' has shape {arr.shape}, expected ({n},)", path)
            arr = arr.astype(np.float64)
            check_finite(arr, path, f"values in '{key}'")
            checked[key] = arr

    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise InputError("'meta' is not a JSON object", path)
    return Pairs(
        a=a.astype(np.float32, copy=False),
        b=b.astype(np.float32, copy=False),
        angle=checked["angle"],
        tx=checked["tx"],
        ty=checked["ty"],
        meta=meta,
    )


def read_pairs(path: PathLike) -> Pairs:
    """Read and validate a pairs ``.npz`` file (see interfaces.md)."""
    path = Path(path)
    _require_file(path)
    # Checked first: otherwise np.load falls back to unpickling and reports that instead.
    if not zipfile.is_zipfile(path):
        raise InputError("not a readable pairs .npz: not a zip archive", path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            for key in ("a", "b"):
                if key not in files:
                    raise InputError(f"missing array '{key}'", path)
            loaded = {k: npz[k] for k in ("a", "b", "angle", "tx", "ty", "meta") if k in files}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"not a readable pairs .npz: {_reason(exc)}", path) from exc

    meta: Any = None
    if "meta" in loaded:
        raw = loaded["meta"]
        if raw.ndim != 0 or raw.dtype.kind not in "US":
            raise InputError("'meta' is not a JSON string", path)
        text = raw.item()
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"bad JSON in 'meta': {_reason(exc)}", path) from exc
    truth = {k: loaded.get(k) for k in ("angle", "tx", "ty")}
    return _validated_pairs(loaded["a"], loaded["b"], truth, meta, path)


def write_pairs(path: PathLike, pairs: Pairs) -> None:
    """Write ``pairs`` as an uncompressed ``.npz`` (meta as a 0-d JSON string array).

    The pairs are validated first (InputError naming ``path`` if they break the format).
    """
    path = Path(path)
    truth = {"angle": pairs.angle, "tx": pairs.tx, "ty": pairs.ty}
    checked = _validated_pairs(pairs.a, pairs.b, truth, pairs.meta, path)
    arrays: dict[str, np.ndarray] = {"a": checked.a, "b": checked.b}
    if checked.has_truth:
        arrays.update(angle=checked.angle, tx=checked.tx, ty=checked.ty)
    arrays["meta"] = np.array(json.dumps(checked.meta))
    # A file object, not a name: np.savez would append ".npz" to a name without that suffix.
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


# --------------------------------------------------------------------------------------------
# Estimates (.csv)
# --------------------------------------------------------------------------------------------

ESTIMATE_COLUMNS = ("index", "angle", "tx", "ty")


def write_estimates(
    path: PathLike,
    angle: Any,
    tx: Any,
    ty: Any,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """Write estimates as CSV ``index,angle,tx,ty[,extra...]``, one row per pair.

    Angles are wrapped to [0, 360); floats are written with 6 decimals.
    """
    angle = np.asarray(angle, dtype=np.float64).reshape(-1)
    n = len(angle)
    # Round before wrapping, so that 359.9999999 is written as 0.000000, not 360.000000.
    wrapped = np.mod(np.round(angle, 6), 360.0)
    wrapped[wrapped >= 360.0] = 0.0  # np.mod(-1e-17, 360) == 360.0 in floating point
    columns: dict[str, Any] = {
        "index": np.arange(n),
        "angle": wrapped,
        "tx": _column(np.asarray(tx, dtype=np.float64), n, "tx"),
        "ty": _column(np.asarray(ty, dtype=np.float64), n, "ty"),
    }
    for name, values in (extra or {}).items():
        if name in columns:
            raise ValueError(f"extra column {name} clashes with a standard column")
        columns[name] = _column(values, n, name)
    frame = pd.DataFrame(columns)
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")


def read_estimates(path: PathLike, n: int | None = None) -> pd.DataFrame:
    """Read and validate an estimates CSV; rows come back sorted by ``index``.

    ``n``, if given, is the number of pairs the estimates must cover.
    """
    path = Path(path)
    _require_file(path)
    try:
        frame = pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"not a readable CSV file: {_reason(exc)}", path) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    for name in ESTIMATE_COLUMNS:
        if name not in frame.columns:
            raise InputError(f"missing column '{name}'", path)
    if len(frame) == 0:
        raise InputError("has no rows", path)
    for name in ESTIMATE_COLUMNS:
        coerced = pd.to_numeric(frame[name], errors="coerce")
        if (coerced.isna() & frame[name].notna()).any():
            raise InputError(f"column '{name}' is not numeric", path)
        values = coerced.to_numpy(dtype=np.float64)
        check_finite(values, path, f"values in '{name}'")  # empty cells read as NaN
        frame[name] = values
    index = frame["index"].to_numpy()
    k = len(frame)
    if not np.array_equal(np.sort(index), np.arange(k)):
        raise InputError(f"column 'index' is not 0..{k - 1}, each once", path)
    frame["index"] = index.astype(np.int64)
    frame = frame.sort_values("index", kind="stable").reset_index(drop=True)
    if n is not None and k != n:
        raise InputError(f"has {k} rows, the pairs file has {n}", path)
    return frame
