"""Which pair source a config trains on, and the stream of batches (in this process or in
pair-making worker processes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from udl_align.aligners.base import run_aligner
from udl_align.aligners.bruteforce import BruteForce
from udl_align.data.particles import read_reference
from udl_align.data.photos import NaturalPairSource
from udl_align.data.sources import PairFileSource
from udl_align.data.stack_pairs import StackPairSource, is_held_out
from udl_align.data.stacks import open_particles
from udl_align.errors import InputError
from udl_align.io.files import atomic_output
from udl_align.io.pairs import read_pairs
from udl_align.training.config import VALIDATION, TrainConfig, is_particle_data


def default_sources(cfg: TrainConfig, progress: bool = True, cache: Path | None = None):
    """``make_source(cfg, seed_offset)`` for ``cfg.images``: photographs of a folder (train
    split; new pairs at every step), the pairs of a ``.npz``, or pairs of particles of a stack
    or STAR (:mod:`udl_align.data.stack_pairs`); the last two hold a tenth out for
    validation. ``cache``: where the ``search`` objective keeps its targets
    (:func:`cached_search_poses`)."""
    path = Path(cfg.images)
    if is_particle_data(path):
        particles = open_particles(path)
        if cfg.objective == "supervised" and particles.transforms() is None:
            raise InputError("has no rlnAnglePsi and origins: supervised training needs "
                             "them", path)
        reference = None
        if cfg.reference:
            reference = read_reference(cfg.reference, particles.size)
        targets = None
        if cfg.objective == "search":
            if reference is None:
                raise InputError("--objective search trains on the exhaustive search's poses "
                                 "against a reference: give --reference", path)
            targets = cached_search_poses(cache, particles, reference, cfg, progress)
        return lambda c, offset: StackPairSource(
            particles, seed=c.seed + offset, group_by=c.group_by, reference=reference,
            part="val" if offset == VALIDATION else "train",
            targets=None if offset == VALIDATION else targets)
    if cfg.objective == "search":
        raise InputError("--objective search trains on the particles of a stack or STAR", path)
    if path.suffix.lower() != ".npz":
        return lambda c, offset: NaturalPairSource(
            c.images, size=c.source_size, noise=c.noise, max_shift=c.max_shift,
            seed=c.seed + offset, split="train")
    pairs = read_pairs(path)
    if cfg.objective == "supervised" and not pairs.has_truth:
        raise InputError("has no true angles: supervised training needs them", path)
    return lambda c, offset: PairFileSource(pairs, seed=c.seed + offset,
                                            part="val" if offset == VALIDATION else "train")


#: particles aligned per call of the exhaustive search that makes the targets of ``search``
SEARCH_CHUNK = 256


def search_poses(particles, reference: np.ndarray, limit: int, seed: int,
                 progress: bool = True) -> np.ndarray:
    """The targets of the ``search`` objective: ``(n, 3)`` transforms taking ``reference`` onto
    each of up to ``limit`` training particles (a seeded sample; the held-out tenth is never
    searched), found by the exhaustive search (:class:`BruteForce`); NaN for the others and
    for particles with non-finite pixels. No labels: the search is the teacher, and the
    network learns to give its answers hundreds of times faster."""
    n = particles.n
    poses = np.full((n, 3), np.nan)
    pool = np.nonzero(~is_held_out(n))[0]
    pick = np.sort(np.random.default_rng([seed, 3]).choice(pool, min(limit, len(pool)),
                                                           replace=False))
    search = BruteForce()
    ref = np.asarray(reference, np.float32)[None]
    with particles.reader() as read, tqdm(total=len(pick), desc="exhaustive search",
                                          unit="particle", disable=not progress) as bar:
        for lo in range(0, len(pick), SEARCH_CHUNK):
            index = pick[lo:lo + SEARCH_CHUNK]
            images = read(index)
            ok = np.isfinite(images).all(axis=(1, 2))
            if ok.any():
                est, _ = run_aligner(search, np.repeat(ref, int(ok.sum()), 0), images[ok],
                                     progress=False)
                poses[index[ok]] = np.stack([est.angle, est.tx, est.ty], 1)
            bar.update(len(index))
    return poses


def search_cache_path(out: str | Path) -> Path:
    """Where the run with checkpoint ``out`` keeps its ``search`` targets."""
    out = Path(out)
    return Path(f"{out.with_suffix('') if out.suffix else out}_search_poses.npz")


def cached_search_poses(cache: Path | None, particles, reference: np.ndarray, cfg: TrainConfig,
                        progress: bool = True) -> np.ndarray:
    """:func:`search_poses` of ``cfg``'s particles, read from ``cache`` when it holds the
    poses of the same particles (file and count), reference, sample size and seed (a resumed
    run skips the search), else searched and written there (atomically)."""
    key = {"data": str(Path(cfg.images).resolve()), "n": int(particles.n),
           "reference": hashlib.sha1(np.ascontiguousarray(reference, np.float32)).hexdigest(),
           "limit": int(cfg.search_particles), "seed": int(cfg.seed)}
    if cache is not None and cache.exists():
        try:
            with np.load(cache) as saved:
                if json.loads(str(saved["key"])) == key:
                    return saved["poses"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable or of another kind: search again and replace it
    poses = search_poses(particles, reference, cfg.search_particles, cfg.seed, progress)
    if cache is not None:
        with atomic_output(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, poses=poses, key=json.dumps(key, sort_keys=True))
    return poses


WORKER_SEEDS = 1_000_000  # seed offsets of pair-making processes: far from the split offsets


class _SourceBatches(torch.utils.data.IterableDataset):
    """Endless batches of one source per worker process, each seeded from the run's seed, the
    step the workers started at (a resumed run draws new pairs) and the worker's number."""

    def __init__(self, make_source, cfg: TrainConfig, start_step: int):
        super().__init__()
        self.make_source, self.cfg, self.start_step = make_source, cfg, start_step

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        offset = WORKER_SEEDS * (1 + (worker.id if worker else 0)) + self.start_step
        source = self.make_source(self.cfg, offset)
        while True:
            yield source.sample(self.cfg.batch_size)


def batch_stream(make_source, cfg: TrainConfig, source, start_step: int):
    """The training batches: from ``source`` in this process (reproducible to the pair, and
    resumed from its saved random state), or from ``cfg.workers`` processes in turn (seeded;
    the data loader keeps their order)."""
    if cfg.workers < 1:
        while True:
            yield source.sample(cfg.batch_size)
    loader = torch.utils.data.DataLoader(
        _SourceBatches(make_source, cfg, start_step), batch_size=None,
        num_workers=cfg.workers, prefetch_factor=4, persistent_workers=True,
        multiprocessing_context="fork")  # fork: sources are built by closures
    try:
        yield from loader
    except InputError as err:  # a worker's error arrives with its whole traceback as message
        last = str(err).strip().splitlines()[-1]
        raise InputError(last.split("InputError: ", 1)[-1]) from None
