"""Pairs files (``.npz``) and estimates files (``.csv``).

A pairs file is an ``.npz`` archive (no pickled objects) holding

* ``a`` and ``b``: floating-point arrays of one shape ``(n, N, N)`` (n >= 1 pairs of square
  images, N >= 1), every pixel finite; read as float32;
* optionally the truth: ``angle`` (degrees), ``tx`` and ``ty`` (pixels), numeric ``(n,)``
  arrays, finite, such that ``apply(a[i], (angle[i], tx[i], ty[i])) ~ b[i]`` in the sense of
  :mod:`udl_align.geometry`; with ``angle`` alone the shifts are 0, and a shift without
  ``angle`` is refused;
* optionally ``meta``: a 0-d string array holding a JSON object (how the pairs were made:
  generator, noise, size, max_shift, seed, ...).

An estimates file is CSV with the header ``index,angle,tx,ty`` and any further columns
(``score``, ``seconds``, ...): one row per pair, ``index`` 0..n-1 each once, ``angle`` in
degrees wrapped to [0, 360), the transform taking ``a[index]`` onto ``b[index]``; floats are
written with 6 decimals.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from udl_align.errors import InputError
from udl_align.io.files import PathLike, _reason, _require_file, atomic_output, check_finite
from udl_align.io.particle_files import _column


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
    """Pairs that keep the pairs-file format (see the module doc); InputError if they break
    it."""
    a, b = _checked_images(a, b, path)
    checked = _checked_truth(truth, a.shape[0], path)
    return Pairs(
        a=a.astype(np.float32, copy=False),
        b=b.astype(np.float32, copy=False),
        angle=checked["angle"],
        tx=checked["tx"],
        ty=checked["ty"],
        meta=_checked_meta(meta, path),
    )


def _checked_images(a: Any, b: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b``: floating point, of one shape ``(n, N, N)`` with n and N at least 1,
    finite."""
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
    return a, b


def _checked_truth(truth: dict[str, Any], n: int, path: Path) -> dict[str, np.ndarray | None]:
    """``angle``, ``tx``, ``ty`` as float64 ``(n,)`` arrays (shifts 0 where only the angle is
    given), or all None where none is given."""
    present = {k: v for k, v in truth.items() if v is not None}
    if present and "angle" not in present:
        raise InputError(f"has '{sorted(present)[0]}' but no 'angle'", path)
    checked: dict[str, np.ndarray | None] = {"angle": None, "tx": None, "ty": None}
    if not present:
        return checked
    for key in ("angle", "tx", "ty"):
        arr = np.asarray(present.get(key, np.zeros(n)))
        if arr.dtype.kind not in "iuf":
            raise InputError(f"truth '{key}' is not numeric (dtype {arr.dtype})", path)
        if arr.shape != (n,):
            raise InputError(f"truth '{key}' has shape {arr.shape}, expected ({n},)", path)
        arr = arr.astype(np.float64)
        check_finite(arr, path, f"values in '{key}'")
        checked[key] = arr
    return checked


def _checked_meta(meta: Any, path: Path) -> dict:
    """``meta`` as a dict (empty where there is none)."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InputError("'meta' is not a JSON object", path)
    return meta


def read_pairs(path: PathLike) -> Pairs:
    """Read and validate a pairs ``.npz`` file (the format: see the module doc)."""
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
