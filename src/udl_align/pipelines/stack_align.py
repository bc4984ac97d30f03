"""Align every particle of a stack to a reference (``udl-align align --stack``).

:func:`align_particles` is the whole command: the reference read from a file, or made from
the stack (:mod:`.reference_free`), then :func:`align_stack` on every process ``torchrun``
started. :func:`align_stack` aligns the particles batch by batch (:mod:`.aligning`: the
transform taking the reference onto each particle, and its correntropy score) and writes the
outputs into ``out_dir`` (:mod:`.outputs`: ``particles.star``, ``aligned.mrcs``,
``average.mrc``, ``average.png``, ``align.json``).

Particles with NaN or Inf pixels are left out of every output and counted. Nothing is left in
``out_dir`` if anything fails. One process keeps its progress in ``out_dir/.partial``
(:mod:`.resume`), so that a killed run goes on from its last saved batch. Under ``torchrun``
each process aligns one contiguous slice of the stack into its own part (``out_dir/.parts``);
rank 0 merges the parts, in input order, into the outputs one process writes.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from udl_align import distributed
from udl_align.aligners.base import Aligner
from udl_align.aligners.network import TRUST_PAIRS, NetworkAligner
from udl_align.data.particles import read_reference
from udl_align.data.stacks import ParticleSet
from udl_align.distributed import Ranks
from udl_align.errors import InputError
from udl_align.io.files import PathLike, all_or_nothing, atomic_output, check_out_dir
from udl_align.io.mrc import MrcStack, mrc_stack_writer
from udl_align.pipelines.aligning import Part, aligned_batches, count_finite
from udl_align.pipelines.outputs import output_paths, write_outputs
from udl_align.pipelines.reference_free import reference_free
from udl_align.pipelines.resume import FOLDER, Progress, remove_progress

#: the folder of ``out_dir`` where the processes under ``torchrun`` leave their parts
PARTS = ".parts"


@dataclass(frozen=True)
class StackAlignOptions:
    """How a stack alignment runs."""

    #: particles aligned per batch
    batch_size: int = 64
    #: threads reading particles ahead of the alignment (0: read in turn)
    workers: int = 0
    #: show progress bars
    progress: bool = True
    #: go on from the progress a killed run into the same ``out_dir`` saved
    resume: bool = False
    #: also save the progress every this many batches (0: every ``resume.SAVE_SECONDS`` only)
    save_every: int = 0
    #: without a reference: at most this many align-and-average rounds to make one
    rounds: int = 5


def align_particles(particles: ParticleSet, aligner: Aligner, out_dir: PathLike,
                    reference: PathLike | None = None,
                    options: StackAlignOptions = StackAlignOptions(), log=print,
                    warn=None) -> dict:
    """Align ``particles`` to the image in the file ``reference`` (MRC or PNG/JPEG/TIFF, of
    the particles' size) or, without one, to a reference made from the stack; write the
    outputs into ``out_dir``. Under ``torchrun`` the processes share the stack. Returns the
    summary of :func:`align_stack` (``{}`` on processes other than rank 0).

    A network aligner is first checked against the exhaustive search on a sample of the
    particles (:func:`check_network`); ``warn(message)`` is told when it fails (default: a
    line on stderr)."""
    image = read_reference(reference, particles.size) if reference is not None else None
    trust = check_network(particles, aligner, image, warn or _warn)
    if image is not None:
        record: dict = {"reference": str(reference)}
    else:
        image, history = reference_free(particles, aligner, options.batch_size,
                                        rounds=options.rounds, progress=options.progress,
                                        log=log)
        record = {"reference": "reference-free", "rounds": history}
    if trust is not None:
        record["trust_check"] = trust
    ranks = distributed.start(aligner.device)  # one process of several under torchrun
    try:
        return align_stack(particles, image, aligner, out_dir, options, record=record, log=log,
                           ranks=ranks)
    finally:
        distributed.stop(ranks)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def check_network(particles: ParticleSet, aligner: Aligner, reference: np.ndarray | None,
                  warn) -> dict | None:
    """For a network aligner, the trust check
    (:meth:`~udl_align.aligners.network.NetworkAligner.check_trust`) on a seeded sample of
    the pairs it will align: (``reference``, particle), or without a reference two different
    particles (the pairs the reference-free rounds start from). ``warn`` is told when the
    network fails it (``--refine`` then searches the whole circle). Returns the check's
    record, or ``None`` for other aligners."""
    if not isinstance(aligner, NetworkAligner) or particles.n < 2:
        return None
    rng = np.random.default_rng(0)
    k = min(particles.n, TRUST_PAIRS)
    with particles.reader() as read:
        if reference is not None:
            b = read(np.sort(rng.choice(particles.n, k, replace=False)))
            a = np.repeat(np.asarray(reference, np.float32)[None], k, 0)
        else:
            pick = np.stack([rng.choice(particles.n, 2, replace=False) for _ in range(k)])
            a, b = read(pick[:, 0]), read(pick[:, 1])
    finite = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
    if finite.sum() < 2:
        return None
    return aligner.check_trust(a[finite], b[finite], warn=warn, item="particle")


def align_stack(particles: ParticleSet, reference: np.ndarray, aligner: Aligner,
                out_dir: PathLike, options: StackAlignOptions = StackAlignOptions(), *,
                record: dict | None = None, log=print, ranks: Ranks | None = None) -> dict:
    """Align ``particles`` to the image ``reference``, write the outputs into ``out_dir`` and
    return the summary (counts, mean score, particles/s) that ``align.json`` holds with
    ``record`` (e.g. how the reference was made).

    ``ranks``: this process's place under ``torchrun``; rank 0 merges the processes' parts
    and returns the summary, the others return ``{}``. A single process keeps its progress:
    killed, it goes on from its last saved batch when called again with ``options.resume``."""
    ranks = ranks or Ranks()
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        paths = output_paths(out_dir)
        with all_or_nothing() as finished:
            if ranks.active:
                part = align_shared(particles, reference, aligner, out_dir,
                                    paths["aligned.mrcs"], options, log, ranks)
            else:
                part = align_part(particles, reference, aligner, paths["aligned.mrcs"],
                                  options, log, keep=out_dir / FOLDER)
            if part is None:  # not rank 0: rank 0 writes the outputs
                return {}
            finished.append(paths["aligned.mrcs"])
            return write_outputs(particles, reference, aligner.name, part, paths, finished,
                                 record)
    except Exception:
        # bad input or a failed write: nothing stays behind, not even the folder this call
        # made (an interrupted or killed run keeps its progress for resuming)
        remove_progress(out_dir)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def align_part(particles: ParticleSet, reference: np.ndarray, aligner: Aligner,
               stack_path: Path, options: StackAlignOptions, log=print, *, offset: int = 0,
               required: bool = True, keep: Path | None = None) -> Part:
    """Align ``particles`` (input positions counted from ``offset``); their aligned images go
    to ``stack_path``. ``required``: fail if no particle is free of NaN/Inf pixels.

    ``keep``: a folder where the run keeps its progress (:class:`.resume.Progress`), so that
    after a crash ``options.resume`` goes on from the last saved batch; it is removed at the
    end."""
    good = count_finite(particles, options.batch_size, log, required)
    part = Part.empty(good, particles.size)
    written, first, progress = 0, 0, None
    if keep is not None:
        run = {"input": str(particles.path), "n": particles.n, "good": good, "offset": offset,
               "batch": options.batch_size, "aligner": aligner.name,
               "reference": float(np.abs(reference).sum())}
        progress = Progress(keep, run, options.save_every)
        written, first = progress.start(part, options.resume, log)
    with mrc_stack_writer(stack_path, good, particles.size, particles.pixel_size,
                          work=None if progress is None else progress.stack,
                          resume_at=written) as put:
        for where, est, aligned, scores, took in aligned_batches(
                particles, reference, aligner, options.batch_size, options.progress,
                workers=options.workers, first=first):
            put(written, aligned.numpy())
            written = part.add(written, where + offset, est, scores, aligned, took)
            if progress is not None:
                progress.batch_done(part, written, _next_batch(where, options.batch_size,
                                                               particles.n))
    if progress is not None:
        progress.remove()
    return part


def _next_batch(where: np.ndarray, batch_size: int, n: int) -> int:
    """The first particle of the batch after the one that held the particles ``where``."""
    return min((int(where[-1]) // batch_size + 1) * batch_size, n)


def align_shared(particles: ParticleSet, reference: np.ndarray, aligner: Aligner,
                 out_dir: Path, stack_path: Path, options: StackAlignOptions, log,
                 ranks: Ranks) -> Part | None:
    """This process's slice of the stack, aligned into ``out_dir/.parts``; on rank 0, the
    merged :class:`Part` with ``stack_path`` written from the parts' stacks (the parts are
    removed); ``None`` on the other ranks."""
    parts = out_dir / PARTS
    parts.mkdir(exist_ok=True)
    bounds = np.linspace(0, particles.n, ranks.world + 1).astype(int)
    lo, hi = bounds[ranks.rank], bounds[ranks.rank + 1]
    mine = align_part(particles.subset(np.arange(lo, hi)), reference, aligner,
                      parts / f"aligned-{ranks.rank}.mrcs",
                      replace(options, progress=options.progress and ranks.main), log,
                      offset=lo, required=False)
    with atomic_output(parts / f"part-{ranks.rank}.npz") as tmp:
        np.savez(tmp, **vars(mine))
    distributed.barrier(ranks)  # every part is saved
    if not ranks.main:
        distributed.barrier(ranks)  # rank 0 reads the parts, then removes them
        return None
    found = []
    for r in range(ranks.world):
        with np.load(parts / f"part-{r}.npz") as z:
            found.append(Part(**{k: z[k] for k in z.files}))
    part = Part.merge(found)
    if len(part.index) == 0:
        raise InputError("no particle without NaN/Inf pixels", particles.path)
    stacks = [parts / f"aligned-{r}.mrcs" for r, piece in enumerate(found) if len(piece.index)]
    _concatenate_stacks(stacks, stack_path, len(part.index), particles, options.batch_size)
    distributed.barrier(ranks)
    shutil.rmtree(parts, ignore_errors=True)
    return part


def _concatenate_stacks(stacks: list[Path], path: Path, n: int, particles: ParticleSet,
                        batch_size: int) -> None:
    """The ``n`` images of ``stacks``, in order, into one stack at ``path`` (``batch_size``
    images at a time)."""
    with mrc_stack_writer(path, n, particles.size, particles.pixel_size) as put:
        written = 0
        for piece in stacks:
            with MrcStack(piece) as stack:
                for start in range(0, stack.n, batch_size):
                    block = stack.raw(slice(start, min(start + batch_size, stack.n)))
                    put(written, block)
                    written += len(block)


__all__ = ["StackAlignOptions", "align_particles", "align_stack", "align_part", "align_shared"]
