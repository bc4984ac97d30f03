"""Particles read lazily, in input order, from an MRC stack or from the stacks a RELION STAR
file or a cryoSPARC ``.cs`` file names: what ``align --stack`` reads."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from udl_align import geometry
from udl_align.errors import InputError, warn_input
from udl_align.io.mrc import MrcStack
from udl_align.io.particle_files import check_stacks_exist, read_particles_cs, read_particles_star

#: columns read_particles_star / read_particles_cs add to a file's own (not written back)
DERIVED = ("stack_path", "stack_index", "origin_x_px", "origin_y_px", "psi", "pixel_size")
#: what each particle-table suffix is read with
TABLES = {".star": read_particles_star, ".cs": read_particles_cs}


@dataclass
class ParticleSet:
    """Where each particle lives (``stack_path``, 0-based ``stack_index``), its
    ``rlnImageName``, the input table's own columns when there was one (``rows``: a STAR's, or
    the RELION columns of a ``.cs`` file), and its pose when the STAR gives one (``poses``:
    RELION's psi and origins in pixels, ``(n, 3)``). ``pixel_size`` is the images' (most
    particles' where they differ); ``pixel_sizes`` each particle's, only where they differ."""

    path: Path
    stack_path: np.ndarray
    stack_index: np.ndarray
    names: list[str]
    size: int
    pixel_size: float
    rows: pd.DataFrame | None = None
    poses: np.ndarray | None = None
    optics: pd.DataFrame | None = None  # the input table's optics block (RELION 3.1+, .cs)
    pixel_sizes: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.names)

    def subset(self, index: np.ndarray) -> ParticleSet:
        """The particles at ``index`` (input positions), in that order."""
        rows = None if self.rows is None else self.rows.iloc[index].reset_index(drop=True)
        poses = None if self.poses is None else self.poses[index]
        pixels = None if self.pixel_sizes is None else self.pixel_sizes[index]
        return ParticleSet(self.path, self.stack_path[index], self.stack_index[index],
                           [self.names[i] for i in index], self.size, self.pixel_size, rows,
                           poses, self.optics, pixels)

    def batches(self, batch_size: int, workers: int = 0, first: int = 0
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(start, images (k, N, N) float32, finite (k,) bool)`` in input order. A particle
        with NaN or Inf pixels comes as ``finite=False`` (the caller skips and counts it).

        ``workers`` > 0: that many threads read ahead (each with its own open files; plain
        file reads release the GIL), at most two batches each, so memory stays bounded.
        ``first``: start at this particle (a resumed run)."""
        starts = range(first, self.n, batch_size)
        if workers <= 0:
            with self.reader() as read:
                for start in starts:
                    yield self._batch(read, start, batch_size)
            return
        local, opened = threading.local(), []

        def load(start: int):
            if not hasattr(local, "read"):
                files = ExitStack()
                opened.append(files)
                local.read = files.enter_context(self.reader())
            return self._batch(local.read, start, batch_size)

        pending: deque = deque()
        try:
            with ThreadPoolExecutor(workers) as pool:
                for start in starts:
                    pending.append(pool.submit(load, start))
                    if len(pending) > 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
        finally:
            for files in opened:
                files.close()

    def _batch(self, read, start: int, batch_size: int):
        images = read(np.arange(start, min(start + batch_size, self.n)))
        return start, images, np.isfinite(images).all(axis=(1, 2))

    @contextmanager
    def reader(self) -> Iterator:
        """``read(index) -> (k, N, N) float32`` for any particle positions, one read per stack
        and call; the stacks stay open until the ``with`` block ends. No NaN check."""
        stacks: dict[str, MrcStack] = {}

        def read(index: np.ndarray) -> np.ndarray:
            images = np.empty((len(index), self.size, self.size), np.float32)
            paths, within = self.stack_path[index], self.stack_index[index]
            for p in np.unique(paths):
                rows = np.nonzero(paths == p)[0]
                if p not in stacks:
                    stacks[p] = open_stack(p, self.size, self.path)
                order = np.argsort(within[rows], kind="stable")  # runs read in one go
                images[rows[order]] = stacks[p].raw(within[rows][order])
            return images

        try:
            yield read
        finally:
            for stack in stacks.values():
                stack.close()

    def transforms(self) -> np.ndarray | None:
        """``(n, 3)`` (angle, tx, ty) taking the reference onto each particle, from the STAR's
        ``rlnAnglePsi`` and origins (as ``synth cryoem`` writes them); ``None`` without them."""
        if self.poses is None:
            return None
        t = geometry.from_relion(*self.poses.T)
        return np.stack([t.angle, t.tx, t.ty], 1)


def open_stack(path: str | Path, size: int, named_by: Path) -> MrcStack:
    # a table naming ``k@file.mrc`` says the file is a stack, whatever its header's space
    # group (cryoDRGN's EMPIAR-10076 test stack is marked as a volume)
    stack = MrcStack(path, allow_volume=True)
    if stack.size != size:
        stack.close()
        raise InputError(f"its stack {Path(path).name} holds {stack.size} px images, the "
                         f"others {size} px", named_by)
    return stack


def open_particles(path: str | Path) -> ParticleSet:
    """An MRC stack (``.mrcs``, or ``.mrc`` as cryoSPARC names its stacks: every section is a
    particle image, whatever the header's space group), or a RELION STAR file or cryoSPARC
    ``.cs`` file naming stacks. Particles whose pixel sizes differ (optics groups) are
    aligned as they are, in pixels, with one warning."""
    path = Path(path)
    read_table = TABLES.get(path.suffix.lower())
    if read_table is None:
        with MrcStack(path, allow_volume=True) as stack:
            n, size, pixel = stack.n, stack.size, stack.pixel_size
        return ParticleSet(path, np.full(n, str(path)), np.arange(n),
                           [f"{i + 1}@{path.name}" for i in range(n)], size, pixel)
    table = read_table(path)
    check_stacks_exist(table, path)
    df = table.data
    with MrcStack(df["stack_path"].iloc[0], allow_volume=True) as first:
        size, header_pixel = first.size, first.pixel_size
    if table.image_size is not None and table.image_size != size:
        stated = "rlnImageSize" if path.suffix.lower() == ".star" else "blob/shape"
        raise InputError(f"says {stated} {table.image_size} but its stacks hold {size} px "
                         "images", path)
    for p, top in df.groupby("stack_path")["stack_index"].max().items():
        with MrcStack(p, allow_volume=True) as s:
            if top >= s.n:
                raise InputError(f"names image {top + 1} of {Path(p).name}, which holds "
                                 f"{s.n}", path)
    pixels = np.where(np.isnan(table.pixel_sizes), header_pixel, table.pixel_sizes)
    pixel = table.pixel_size or header_pixel
    distinct = np.unique(pixels)
    if len(distinct) > 1:
        shown = ", ".join(f"{v:g}" for v in distinct[:6]) + (", ..." if len(distinct) > 6 else "")
        warn_input(f"particles differ in pixel size ({shown} A): their images are used as "
                   f"they are, in pixels (origins converted with each particle's own pixel "
                   f"size; images written take {pixel:g} A)", path)
    rows = df.drop(columns=[c for c in DERIVED if c in df.columns])
    # a pose needs psi and both origins (read_particles_star derives them in pixels)
    posed = "rlnAnglePsi" in df.columns and all(
        f"rlnOrigin{a}Angst" in df.columns or f"rlnOrigin{a}" in df.columns for a in "XY")
    poses = df[["psi", "origin_x_px", "origin_y_px"]].to_numpy(float) if posed else None
    return ParticleSet(path, df["stack_path"].to_numpy(), df["stack_index"].to_numpy(),
                       list(df["rlnImageName"].astype(str)), size, pixel, rows, poses,
                       table.optics, pixels if len(distinct) > 1 else None)


__all__ = ["ParticleSet", "open_particles"]
