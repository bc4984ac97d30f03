"""Particles read lazily, in input order, from an MRC stack or from the stacks a STAR file
names: what ``align --stack`` reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .io import MrcStack, check_stacks_exist, read_particles_star

#: columns read_particles_star adds to a STAR's own (not written back)
DERIVED = ("stack_path", "stack_index", "origin_x_px", "origin_y_px", "psi")


@dataclass
class ParticleSet:
    """Where each particle lives (``stack_path``, 0-based ``stack_index``), its
    ``rlnImageName``, and the input STAR's own columns when there was one (``rows``)."""

    path: Path
    stack_path: np.ndarray
    stack_index: np.ndarray
    names: list[str]
    size: int
    pixel_size: float
    rows: pd.DataFrame | None = None

    @property
    def n(self) -> int:
        return len(self.names)

    def subset(self, index: np.ndarray) -> ParticleSet:
        """The particles at ``index`` (input positions), in that order."""
        rows = None if self.rows is None else self.rows.iloc[index].reset_index(drop=True)
        return ParticleSet(self.path, self.stack_path[index], self.stack_index[index],
                           [self.names[i] for i in index], self.size, self.pixel_size, rows)

    def batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(start, images (k, N, N) float32, finite (k,) bool)`` in input order. A particle
        with NaN or Inf pixels comes as ``finite=False`` (the caller skips and counts it)."""
        stacks: dict[str, MrcStack] = {}
        try:
            for start in range(0, self.n, batch_size):
                stop = min(start + batch_size, self.n)
                images = np.empty((stop - start, self.size, self.size), np.float32)
                paths = self.stack_path[start:stop]
                index = self.stack_index[start:stop]
                for p in np.unique(paths):  # one read per stack and batch
                    rows = np.nonzero(paths == p)[0]
                    if p not in stacks:
                        stacks[p] = open_stack(p, self.size, self.path)
                    images[rows] = stacks[p].raw(index[rows])
                finite = np.isfinite(images).all(axis=(1, 2))
                yield start, images, finite
        finally:
            for s in stacks.values():
                s.close()


def open_stack(path: str | Path, size: int, named_by: Path) -> MrcStack:
    stack = MrcStack(path)
    if stack.size != size:
        stack.close()
        raise InputError(f"its stack {Path(path).name} holds {stack.size} px images, the "
                         f"others {size} px", named_by)
    return stack


def open_particles(path: str | Path) -> ParticleSet:
    """An MRC stack (``.mrcs``/``.mrc``) or a STAR file naming stacks."""
    path = Path(path)
    if path.suffix.lower() == ".star":
        table = read_particles_star(path)
        check_stacks_exist(table, path)
        df = table.data
        first = MrcStack(df["stack_path"].iloc[0])
        size, header_pixel = first.size, first.pixel_size
        first.close()
        if table.image_size is not None and table.image_size != size:
            raise InputError(f"says rlnImageSize {table.image_size} but its stacks hold "
                             f"{size} px images", path)
        for p, top in df.groupby("stack_path")["stack_index"].max().items():
            with MrcStack(p) as s:
                if top >= s.n:
                    raise InputError(f"names image {top + 1} of {Path(p).name}, which holds "
                                     f"{s.n}", path)
        pixel = table.pixel_size or header_pixel
        rows = df.drop(columns=[c for c in DERIVED if c in df.columns])
        return ParticleSet(path, df["stack_path"].to_numpy(), df["stack_index"].to_numpy(),
                           list(df["rlnImageName"].astype(str)), size, pixel, rows)
    with MrcStack(path) as stack:
        n, size, pixel = stack.n, stack.size, stack.pixel_size
    return ParticleSet(path, np.full(n, str(path)), np.arange(n),
                       [f"{i + 1}@{path.name}" for i in range(n)], size, pixel)


__all__ = ["ParticleSet", "open_particles"]
