"""MRC images, stacks and maps: a header reader that accepts what the field's tools write, lazy
stacks, and writers."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
from mrcfile import utils as mrc_utils
from mrcfile.dtypes import HEADER_DTYPE

from udl_align.errors import InputError, warn_input
from udl_align.io.files import (
    WRITE_ERRNOS,
    PathLike,
    _reason,
    _require_file,
    atomic_output,
    check_finite,
    check_writable,
    settle,
)

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
