"""Particle tables: RELION STAR files (3.0, 3.1, 5) and cryoSPARC ``.cs`` files in
(:class:`ParticlesTable`), RELION 3.1 STAR files out (:class:`ParticlePoses`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile

from udl_align.errors import InputError
from udl_align.io.files import PathLike, _reason, _require_file, atomic_output, check_finite


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
    particles, optics = _star_blocks(path)
    df = particles.reset_index(drop=True).copy()
    pixel, image_size = _star_pixel_sizes(df, optics, path)
    df["pixel_size"] = _checked_pixel_sizes(pixel, path)
    df["stack_index"], df["stack_path"] = _image_locations(df["rlnImageName"], path)
    for axis in ("X", "Y"):
        df[f"origin_{axis.lower()}_px"] = _origin_px(df, axis, pixel, path)
    df["psi"] = (
        _numeric_column(df, "rlnAnglePsi", path) if "rlnAnglePsi" in df.columns else 0.0
    )
    return ParticlesTable(data=df, pixel_size=_most_common(pixel), image_size=image_size,
                          optics=optics)


def _star_blocks(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The particles block of a STAR file, with ``rlnImageName``, and its optics block (None
    before RELION 3.1)."""
    _require_file(path)
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnImageName"])
    except Exception as exc:
        raise InputError(f"not a readable STAR file: {_reason(exc)}", path) from exc
    if "particles" in blocks:
        particles, optics = _as_frame(blocks["particles"]), _as_frame(blocks.get("optics"))
    else:
        particles, optics = _pre31_particles(blocks), None
    if particles is None or len(particles) == 0:
        raise InputError("no particles in this STAR file", path)
    if "rlnImageName" not in particles.columns:
        raise InputError("missing column rlnImageName", path)
    return particles, optics


def _pre31_particles(blocks: Mapping[str, Any]) -> pd.DataFrame | None:
    """Before RELION 3.1: one unnamed block (or the first block naming images)."""
    frames = [f for f in (_as_frame(b) for b in blocks.values()) if f is not None]
    with_names = [f for f in frames if "rlnImageName" in f.columns]
    return with_names[0] if with_names else (frames[0] if frames else None)


def _star_pixel_sizes(df: pd.DataFrame, optics: pd.DataFrame | None,
                      path: Path) -> tuple[np.ndarray, int | None]:
    """Each particle's pixel size (NaN where the file gives none) and the image size the
    file states (None where it states none)."""
    if optics is not None:
        return _optics_pixel_sizes(df, optics, path)
    if "rlnPixelSize" in df.columns:
        return _numeric_column(df, "rlnPixelSize", path), None
    if "rlnDetectorPixelSize" in df.columns and "rlnMagnification" in df.columns:
        # Detector pixel in micrometres, magnification dimensionless: 1 um = 1e4 A.
        pixel = _numeric_column(df, "rlnDetectorPixelSize", path) * 1e4 / _numeric_column(
            df, "rlnMagnification", path
        )
        return pixel, None
    return np.full(len(df), np.nan), None


def _optics_pixel_sizes(df: pd.DataFrame, optics: pd.DataFrame,
                        path: Path) -> tuple[np.ndarray, int | None]:
    """RELION 3.1+: pixel and image size from each particle's optics group, which must hold
    2-D images of one size."""
    rows = _optics_rows(df, optics, path)
    pixel = np.full(len(df), np.nan)
    image_size: int | None = None
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
    return pixel, image_size


def _optics_rows(df: pd.DataFrame, optics: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Each particle's row of the optics block, by its ``rlnOpticsGroup`` (which a file with
    one optics group may leave out)."""
    if "rlnOpticsGroup" in df.columns and "rlnOpticsGroup" in optics.columns:
        groups = optics.set_index(pd.to_numeric(optics["rlnOpticsGroup"], errors="coerce"))
        wanted = pd.to_numeric(df["rlnOpticsGroup"], errors="coerce")
        missing = sorted(set(wanted.unique()) - set(groups.index))
        if missing:
            raise InputError(f"rlnOpticsGroup {missing[0]} is not in the optics block", path)
        return groups.loc[wanted.to_numpy()].reset_index(drop=True)
    if len(optics) == 1:
        return optics.iloc[[0] * len(df)].reset_index(drop=True)  # one group: everyone's
    raise InputError("missing column rlnOpticsGroup (several optics groups)", path)


def _image_locations(image_names: pd.Series, path: Path) -> tuple[pd.Series, pd.Series]:
    """Each particle's 0-based index in its stack and the stack's absolute path, from
    ``rlnImageName`` (``index@stack``, the index 1-based)."""
    names = image_names.astype(str)
    parts = names.str.extract(_IMAGE_NAME)
    bad = parts[0].isna()
    if bad.any():
        value = names[bad].iloc[0]
        raise InputError(f"bad rlnImageName '{value}' (expected index@stack)", path)
    resolved = {s: _resolve_stack(s, path.parent) for s in parts[1].unique()}
    return parts[0].astype(np.int64) - 1, parts[1].map(resolved)


def _origin_px(df: pd.DataFrame, axis: str, pixel: np.ndarray, path: Path) -> np.ndarray:
    """The origin along ``axis`` ("X" or "Y") in pixels, in RELION's sense (it translates
    the particle back to its centre); 0 where the file gives none."""
    angst, pixels = f"rlnOrigin{axis}Angst", f"rlnOrigin{axis}"
    if angst in df.columns:
        if np.isnan(pixel).any():
            raise InputError(f"has {angst} but no pixel size", path)
        return _numeric_column(df, angst, path) / pixel
    if pixels in df.columns:
        return _numeric_column(df, pixels, path)
    return np.zeros(len(df))


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
    arr = _load_cs(path)
    fields, n = arr.dtype.names, len(arr)
    stacks = _cs_stacks(arr, path)
    index = _cs_field(arr, "blob/idx", path, "iu").astype(np.int64)
    if (index < 0).any():
        raise InputError(f"bad blob/idx {index[index < 0][0]} (expected 0 or more)", path)
    image_size = _cs_image_size(arr, path) if "blob/shape" in fields else None
    optics, group = _cs_optics(arr, image_size, path)
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


def _load_cs(path: Path) -> np.ndarray:
    """The structured array of a ``.cs`` file, with ``blob/path``, ``blob/idx`` and at least
    one particle."""
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
    return arr


def _cs_stacks(arr: np.ndarray, path: Path) -> np.ndarray:
    """Each particle's stack as cryoSPARC names it (``blob/path``, without a leading ``>``,
    cryoSPARC's mark of an imported path)."""
    stacks = _cs_field(arr, "blob/path", path, "SU")
    if stacks.dtype.kind == "S":
        try:
            stacks = np.char.decode(stacks, "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"field blob/path is not UTF-8 text: {_reason(exc)}", path) from exc
    return np.array([str(v).strip().removeprefix(">") for v in stacks])


def _cs_image_size(arr: np.ndarray, path: Path) -> int:
    """The side of the particles' square images (``blob/shape``, the same for all)."""
    shape = _cs_field(arr, "blob/shape", path, "iu").reshape(len(arr), -1)
    unique = np.unique(shape, axis=0)
    if len(unique) > 1:
        shown = ", ".join("x".join(str(int(v)) for v in u) for u in unique[:4])
        raise InputError(f"particles differ in image size ({shown}); split the file", path)
    if unique.shape[1] != 2 or unique[0, 0] != unique[0, 1]:
        raise InputError(f"images are not square (blob/shape {list(unique[0])})", path)
    return int(unique[0, 0])


def _cs_optics(arr: np.ndarray, image_size: int | None,
               path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The optics block, one group per distinct combination of the optics fields present, and
    each particle's group (1-based)."""
    n = len(arr)
    optical = [(f, c) for f, c in _CS_OPTICS_COLUMNS.items() if f in arr.dtype.names]
    values = np.stack([_cs_field(arr, f, path).astype(np.float64).reshape(n)
                       for f, _ in optical] or [np.zeros(n)], 1)
    combos, group = np.unique(values, axis=0, return_inverse=True)
    optics = pd.DataFrame({"rlnOpticsGroup": np.arange(1, len(combos) + 1),
                           "rlnOpticsGroupName": [f"opticsGroup{i}"
                                                  for i in range(1, len(combos) + 1)]})
    for k, (_, column) in enumerate(optical):
        optics[column] = combos[:, k]
    optics["rlnImageDimensionality"] = 2
    if image_size is not None:
        optics["rlnImageSize"] = image_size
    return optics, np.asarray(group).reshape(n) + 1


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


@dataclass
class ParticlePoses:
    """Particles with their poses, as :func:`write_particles_star` writes them.

    ``image_names`` are ``index@stack`` strings (the index 1-based); ``psi`` in degrees;
    origins in pixels in RELION's sense (they translate the particle back to its centre);
    ``pixel_size`` in Angstrom, one for all or one per particle; ``image_size`` the images'
    side in pixels. ``extra`` adds particle columns (e.g. ``rlnMaxValueProbDistribution``).
    Scalars are broadcast.

    ``optics``: an input file's optics block, kept with all its columns and groups, and
    ``optics_group`` each particle's ``rlnOpticsGroup`` in it; without it there is one optics
    group per distinct pixel size (so one for a scalar) and ``optics_group`` is not used.
    ``optics_extra`` adds optics-group columns (e.g. ``rlnVoltage``).
    """

    image_names: Any
    psi: Any
    origin_x_px: Any
    origin_y_px: Any
    pixel_size: Any
    image_size: int
    extra: Mapping[str, Any] = field(default_factory=dict)
    optics: pd.DataFrame | None = None
    optics_group: Any = 1
    optics_extra: Mapping[str, float] = field(default_factory=dict)


def write_particles_star(path: PathLike, poses: ParticlePoses) -> None:
    """Write ``poses`` as a RELION 3.1 particles STAR file (``data_optics`` and
    ``data_particles``; origins as ``rlnOriginXAngst = origin_x_px * pixel_size``, with each
    particle's pixel size)."""
    names = [str(s) for s in np.atleast_1d(np.asarray(poses.image_names))]
    pixel = _column(poses.pixel_size, len(names), "pixel_size").astype(np.float64)
    optics, group = _optics_block(poses, pixel)
    particles = _particles_block(poses, names, pixel, group)
    with atomic_output(path) as tmp:
        starfile.write({"optics": optics, "particles": particles}, tmp)


def _optics_block(poses: ParticlePoses, pixel: np.ndarray) -> tuple[pd.DataFrame, Any]:
    """The optics block to write and each particle's optics group in it."""
    optics, group = poses.optics, poses.optics_group
    if optics is None:  # one group per pixel size
        sizes, index = np.unique(pixel, return_inverse=True)
        optics = pd.DataFrame({
            "rlnOpticsGroup": np.arange(1, len(sizes) + 1),
            "rlnOpticsGroupName": [f"opticsGroup{i}" for i in range(1, len(sizes) + 1)],
            "rlnImagePixelSize": sizes,
        })
        group = np.asarray(index).reshape(len(pixel)) + 1
    optics = optics.reset_index(drop=True).copy()
    for column, value in (("rlnImagePixelSize", float(_most_common(pixel) or 1.0)),
                          ("rlnImageSize", int(poses.image_size)),
                          ("rlnImageDimensionality", 2), *poses.optics_extra.items()):
        if column not in optics.columns:
            optics[column] = value
    return optics, group


def _particles_block(poses: ParticlePoses, names: list[str], pixel: np.ndarray,
                     group: Any) -> pd.DataFrame:
    """The particles block to write: names, poses (origins in Angstrom), optics groups and
    the extra columns."""
    n = len(names)

    def floats(values: Any, name: str) -> np.ndarray:
        return _column(values, n, name).astype(np.float64)

    columns: dict[str, Any] = {
        "rlnImageName": names,
        "rlnAnglePsi": floats(poses.psi, "psi"),
        "rlnOriginXAngst": floats(poses.origin_x_px, "origin_x_px") * pixel,
        "rlnOriginYAngst": floats(poses.origin_y_px, "origin_y_px") * pixel,
        "rlnOpticsGroup": _column(group, n, "optics_group").astype(np.int64),
    }
    for name, values in poses.extra.items():
        if name in columns:
            raise ValueError(f"extra column {name} clashes with a standard column")
        columns[name] = _column(values, n, name)
    return pd.DataFrame(columns)
