"""The checks and the atomic output that every reader and writer of the package shares.

Every reader checks what it loads and raises :class:`~udl_align.errors.InputError` with a one-line
message ("path: problem") on bad input, so the CLI can report it and exit 2. Every writer goes
through :func:`atomic_output`, so a failed run never leaves a partial file behind.

The formats are described where they are read and written: images in :mod:`.images`, MRC in
:mod:`.mrc`, RELION STAR and cryoSPARC files in :mod:`.particle_files`, pairs and estimates
files in :mod:`.pairs`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from udl_align.errors import InputError

PathLike = str | os.PathLike


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


def save_figure(fig, path: str | Path) -> None:
    """Save a matplotlib figure atomically (110 dpi, the format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


def write_json(data: dict, path: str | Path) -> None:
    """Write ``data`` as indented JSON, atomically (numpy scalars as plain numbers)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(type(o))

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=default))
