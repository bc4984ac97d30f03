"""Which pair source a config trains on, and the stream of batches (in this process or in
pair-making worker processes)."""

from __future__ import annotations

from pathlib import Path

import torch

from udl_align.data.particles import read_reference
from udl_align.data.photos import NaturalPairSource
from udl_align.data.sources import PairFileSource
from udl_align.data.stack_pairs import StackPairSource
from udl_align.data.stacks import open_particles
from udl_align.errors import InputError
from udl_align.io.pairs import read_pairs
from udl_align.training.config import VALIDATION, TrainConfig, is_particle_data


def default_sources(cfg: TrainConfig):
    """``make_source(cfg, seed_offset)`` for ``cfg.images``: photographs of a folder (train
    split; new pairs at every step), the pairs of a ``.npz``, or pairs of particles of a stack
    or STAR (:mod:`udl_align.data.stack_pairs`); the last two hold a tenth out for
    validation."""
    path = Path(cfg.images)
    if is_particle_data(path):
        particles = open_particles(path)
        if cfg.objective == "supervised" and particles.transforms() is None:
            raise InputError("has no rlnAnglePsi and origins: supervised training needs "
                             "them", path)
        reference = None
        if cfg.reference:
            reference = read_reference(cfg.reference, particles.size)
        return lambda c, offset: StackPairSource(
            particles, seed=c.seed + offset, group_by=c.group_by, reference=reference,
            part="val" if offset == VALIDATION else "train")
    if path.suffix.lower() != ".npz":
        return lambda c, offset: NaturalPairSource(
            c.images, size=c.source_size, noise=c.noise, max_shift=c.max_shift,
            seed=c.seed + offset, split="train")
    pairs = read_pairs(path)
    if cfg.objective == "supervised" and not pairs.has_truth:
        raise InputError("has no true angles: supervised training needs them", path)
    return lambda c, offset: PairFileSource(pairs, seed=c.seed + offset,
                                            part="val" if offset == VALIDATION else "train")


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
