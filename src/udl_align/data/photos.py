"""Seeded synthetic pairs from photographs, built as the paper builds its MS-COCO pairs (Sect. 4.1).

For each pair: pick a photograph (from the chosen split), convert it to grey in [0, 1], pick a
patch of ``size`` pixels, draw an angle uniform in [0, 360) and an integer shift uniform in
``[-max_shift, max_shift]`` on each axis. Patch ``a`` is cut from the photograph as it is; patch
``b`` is cut at the same place from the *whole photograph* rotated about the patch centre and
then shifted (sampled with cubic B-splines), so its corners hold real content, never padding.
Then ``apply(a, (angle, tx, ty)) ~ b`` in the sense of :mod:`udl_align.geometry`. Independent noise
is added to each image afterwards.

Textureless patches are dropped. Both patches are judged inside the central disc of radius
``size/2 - max_shift`` (the content the two patches share whatever the transform; a patch whose
texture sits only in a corner that rotates away carries no alignment signal): the grey-level
standard deviation there must be at least ``min_std`` (0.05) and the mean absolute
finite-difference gradient at least ``min_gradient`` (0.01 grey levels per pixel).

Train/test split by *source photograph*: a photograph is in the test split when
``crc32(file name) % 100 < test_percent``, a rule that does not depend on which other files are in
the folder, so training and test never share a photograph.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from udl_align import geometry
from udl_align.data.noise import Noise, add_mixed, parse_noises
from udl_align.data.sources import PairBatch
from udl_align.errors import InputError
from udl_align.io.images import image_size, list_images, read_image

SPLITS = ("all", "train", "test")
CACHE_BYTES = 2 << 30  # decoded photographs kept (about 8 bytes a pixel: grey and splines)


def split_of(path: str | Path, test_percent: float = 20.0) -> str:
    """``"test"`` or ``"train"`` for a photograph, from a hash of its file name."""
    return "test" if zlib.crc32(Path(path).name.encode()) % 100 < test_percent else "train"


def select_split(paths: Sequence[Path], split: str, test_percent: float = 20.0) -> list[Path]:
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
    if split == "all":
        return list(paths)
    return [p for p in paths if split_of(p, test_percent) == split]




def reach(size: int, max_shift: int) -> int:
    """Largest distance from the patch centre that building ``b`` reads (plus spline margin)."""
    return math.ceil(math.sqrt(2.0) * (size / 2 + max_shift)) + 3


def is_textured(
    patch: np.ndarray, disc: np.ndarray, min_std: float = 0.05, min_gradient: float = 0.01
) -> bool:
    """The texture rule, judged on the pixels where ``disc`` is true."""
    inside = patch[disc]
    gy = np.abs(np.diff(patch, axis=0))[disc[1:, :]].mean()
    gx = np.abs(np.diff(patch, axis=1))[disc[:, 1:]].mean()
    return bool(inside.std() >= min_std and 0.5 * (gx + gy) >= min_gradient)


class NaturalPairSource:
    """Endless, seeded source of rigid pairs from a folder (or list) of photographs."""

    def __init__(
        self,
        images: str | Path | Sequence[str | Path],
        size: int = 128,
        noise: str | Noise | list = "clean",
        max_shift: int = 10,
        seed: int = 0,
        split: str = "all",
        test_percent: float = 20.0,
        min_std: float = 0.05,
        min_gradient: float = 0.01,
    ) -> None:
        if isinstance(images, (str, Path)):
            paths = list_images(images)
            where = str(images)
        else:
            paths = [Path(p) for p in images]
            where = "image list"
        if size < 8:
            raise InputError(f"the patch size must be at least 8 px, got {size}")
        if max_shift < 0:
            raise InputError(f"the largest shift must be >= 0 px, got {max_shift}")
        self.size = int(size)
        self.max_shift = int(max_shift)
        # one condition, or several (a comma list or "mix"): then one is drawn per pair
        self.noises = parse_noises(noise)
        self.seed = int(seed)
        self.split = split
        self.test_percent = float(test_percent)
        self.min_std, self.min_gradient = float(min_std), float(min_gradient)
        chosen = select_split(paths, split, test_percent)
        if not chosen:
            raise InputError(f"none of its {len(paths)} photographs is in the '{split}' split "
                             f"(a file is in the test split when crc32(file name) % 100 < "
                             f"{test_percent:g})", where)
        # headers only, up front: an unreadable file is named at once, not when a draw first
        # reaches it (hours into training), and photographs too small for a patch and its
        # turns are left out rather than drawn and rejected
        need = 2 * reach(self.size, self.max_shift) + 1
        sizes = [image_size(p) for p in chosen]
        self.paths = [p for p, wh in zip(chosen, sizes, strict=True) if min(wh) >= need]
        if not self.paths:
            largest = max(min(wh) for wh in sizes)
            raise InputError(f"no photograph is large enough: {size} px pairs with shifts up "
                             f"to {max_shift} px need {need} px on the short side, the "
                             f"largest of {len(chosen)} has {largest}", where)
        # separate streams: the same seed gives the same geometry under every noise condition
        self.rng = np.random.default_rng([self.seed, 0])
        self.noise_rng = np.random.default_rng([self.seed, 1])
        # decoded photographs, the least recently drawn dropped beyond CACHE_BYTES
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cached_bytes = 0
        self._grid = geometry.centred_grid(self.size)
        self._shared_radius = max(self.size / 2 - self.max_shift, self.size / 4)
        self._disc = np.hypot(*self._grid) <= self._shared_radius
        self._where = where

    # -- photographs -------------------------------------------------------------------------
    def _photo(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Grey photograph and its cubic-spline coefficients (computed once)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        grey = read_image(self.paths[index])
        coeffs = ndimage.spline_filter(grey, order=3, output=np.float32, mode="mirror")
        self._cache[index] = (grey, coeffs)
        self._cached_bytes += grey.nbytes + coeffs.nbytes
        while self._cached_bytes > CACHE_BYTES and len(self._cache) > 1:
            old_grey, old_coeffs = self._cache.popitem(last=False)[1]
            self._cached_bytes -= old_grey.nbytes + old_coeffs.nbytes
        return grey, coeffs

    # -- one pair ----------------------------------------------------------------------------
    def _views(self, k: int = 2, tries: int = 50) -> tuple[list[np.ndarray], list, str]:
        """``k`` clean views of one spot: view 0 as cut, view ``j`` transformed by a random
        ``(angle, tx, ty)`` (returned, one per view after the first)."""
        n, half = self.size, self.size // 2
        margin = reach(n, self.max_shift)
        yy, xx = self._grid
        for _ in range(tries):
            index = int(self.rng.integers(len(self.paths)))
            grey, coeffs = self._photo(index)
            h, w = grey.shape
            cy = int(self.rng.integers(margin, h - margin))
            cx = int(self.rng.integers(margin, w - margin))
            views = [grey[cy - half : cy - half + n, cx - half : cx - half + n].copy()]
            transforms = []
            for _ in range(k - 1):
                angle = float(self.rng.uniform(0.0, 360.0))
                tx, ty = (int(v) for v in self.rng.integers(-self.max_shift, self.max_shift + 1, 2))
                sy, sx = geometry.source_coordinates(angle, tx, ty, yy, xx)
                views.append(ndimage.map_coordinates(
                    coeffs, [sy + cy, sx + cx], order=3, prefilter=False, mode="mirror"
                ).astype(np.float32))
                transforms.append((angle, tx, ty))
            if all(is_textured(v, self._disc, self.min_std, self.min_gradient) for v in views):
                return views, transforms, self.paths[index].name
        raise InputError(
            f"could not find a textured {n} px patch in {tries} tries", self._where
        )

    def _one(self) -> tuple[np.ndarray, np.ndarray, float, int, int, str]:
        (a, b), ((angle, tx, ty),), name = self._views(2)
        return a, b, angle, tx, ty, name

    def _draw_conditions(self, n: int) -> np.ndarray:
        """One noise condition per group (a single condition draws nothing from the noise
        stream, which then holds the noise alone)."""
        if len(self.noises) == 1:
            return np.zeros(n, int)
        return self.noise_rng.integers(len(self.noises), size=n)

    def sample_views(self, n: int, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """``n`` groups of ``k`` noisy views of one spot ``(n, k, N, N)`` and each view's true
        transform from view 0 ``(n, k, 3)`` (for label-free calibration and its checks)."""
        groups = [self._views(k) for _ in range(n)]
        clean = np.stack([np.stack(g[0]) for g in groups])
        truth = np.array([[(0.0, 0.0, 0.0), *g[1]] for g in groups])
        which = self._draw_conditions(n)
        views = np.stack([add_mixed(self.noises, clean[:, j], which, self.noise_rng)
                          for j in range(k)], axis=1)
        return views, truth

    def sample(self, n: int, keep_clean: bool = False) -> PairBatch:
        """The next ``n`` pairs of the seeded sequence."""
        items = [self._one() for _ in range(n)]
        clean_a = np.stack([it[0] for it in items])
        clean_b = np.stack([it[1] for it in items])
        # both images of a pair share the condition, never the realisation
        which = self._draw_conditions(n)
        return PairBatch(
            a=add_mixed(self.noises, clean_a, which, self.noise_rng),
            b=add_mixed(self.noises, clean_b, which, self.noise_rng),
            angle=np.array([it[2] for it in items]),
            tx=np.array([it[3] for it in items], np.float64),
            ty=np.array([it[4] for it in items], np.float64),
            source=[it[5] for it in items],
            clean_a=clean_a if keep_clean else None,
            clean_b=clean_b if keep_clean else None,
        )

    def batches(self, batch_size: int, keep_clean: bool = False) -> Iterator[PairBatch]:
        """Endless stream of batches (for training)."""
        while True:
            yield self.sample(batch_size, keep_clean=keep_clean)

    def meta(self) -> dict:
        return {
            "generator": "udl-align synth natural",
            "noise": ",".join(str(n) for n in self.noises),
            "size": self.size,
            "max_shift": self.max_shift,
            "seed": self.seed,
            "split": self.split,
            "test_percent": self.test_percent,
            "texture_rule": {"min_std": self.min_std, "min_gradient": self.min_gradient,
                             "inside_radius": self._shared_radius},
            "sources": sorted({p.name for p in self.paths}),
        }


def generate_natural_pairs(
    images: str | Path | Sequence[str | Path],
    n: int,
    progress: bool = True,
    chunk: int = 50,
    **options,
) -> tuple[PairBatch, dict]:
    """``n`` seeded pairs (and their ``meta``) from photographs; see :class:`NaturalPairSource`."""
    if n < 1:
        raise InputError(f"the number of pairs must be at least 1, got {n}")
    source = NaturalPairSource(images, **options)
    parts = []
    with tqdm(total=n, desc="synth natural", unit="pair", disable=not progress) as bar:
        done = 0
        while done < n:
            k = min(chunk, n - done)
            parts.append(source.sample(k))
            done += k
            bar.update(k)
    batch = PairBatch(
        a=np.concatenate([p.a for p in parts]),
        b=np.concatenate([p.b for p in parts]),
        angle=np.concatenate([p.angle for p in parts]),
        tx=np.concatenate([p.tx for p in parts]),
        ty=np.concatenate([p.ty for p in parts]),
        source=[s for p in parts for s in p.source],
    )
    meta = source.meta()
    meta["n"] = n
    meta["pair_sources"] = batch.source
    return batch, json.loads(json.dumps(meta))


