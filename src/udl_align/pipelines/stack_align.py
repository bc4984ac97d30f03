"""Align every particle of a stack to a reference (``udl-align align --stack``).

For each particle ``p`` the aligner estimates ``T`` with ``apply(reference, T) ~ p`` (the
transform taking the reference onto the particle: RELION's sense of a pose, converted by
``geometry.to_relion``). Outputs, in ``out_dir``:

* ``particles.star``: RELION 3.1, one row per aligned particle in input order, with
  ``rlnImageName``, ``rlnAnglePsi``, ``rlnOriginXAngst``/``YAngst`` and the score
  ``rlnUdlCorrentropy``; the input STAR's other columns (defocus, ...) are kept;
* ``aligned.mrcs``: each particle brought onto the reference (``apply(p, T^-1)``, bicubic);
* ``average.mrc`` (the input's pixel size) and ``average.png`` (reference beside average);
* ``align.json``: counts, mean correntropy, particles/s, and how the reference was made.

The score is the correntropy ``mean(exp(-(x - y)^2))`` between the aligned particle and the
reference inside the disc of radius ``N/2 - max_shift - 1``, each normalised there to zero
mean and unit variance (a Gaussian kernel of width ``1/sqrt(2)`` standard deviations).

Particles with NaN or Inf pixels are left out of every output and counted. Nothing is left in
``out_dir`` if anything fails. Under ``torchrun`` the processes share the stack (see
:func:`align_stack`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from udl_align import distributed, geometry
from udl_align.aligners.base import Aligner
from udl_align.aligners.correlation import correntropy, mask_radius
from udl_align.data.stacks import ParticleSet
from udl_align.distributed import Ranks
from udl_align.errors import InputError
from udl_align.io.files import (
    all_or_nothing,
    atomic_output,
    check_out_dir,
    check_writable,
    save_figure,
    write_json,
)
from udl_align.io.mrc import MrcStack, mrc_stack_writer, write_mrc
from udl_align.io.particle_files import write_particles_star

OUTPUTS = ("particles.star", "aligned.mrcs", "average.mrc", "average.png", "align.json")




def aligned_batches(particles: ParticleSet, reference: np.ndarray, aligner: Aligner,
                    batch_size: int, progress: bool = False, desc: str | None = None,
                    workers: int = 0, first: int = 0):
    """Align the finite particles batch by batch; yields ``(index, estimate, aligned, score,
    seconds)``: input positions, the :class:`Estimate`, the particles brought onto the
    reference ``(k, N, N)`` tensor, their correntropy to it, and the time it took."""
    size = particles.size
    s = aligner.shift_range(size)
    mask = torch.as_tensor(geometry.soft_circular_mask(size, mask_radius(size, s), edge=2.0))
    ref_t = torch.as_tensor(reference)
    with tqdm(total=particles.n, initial=first, desc=desc or f"align {aligner.name}",
              unit="particle", disable=not progress) as bar:
        for start, images, finite in particles.batches(batch_size, workers, first):
            good = images[finite]
            if len(good):
                t0 = time.perf_counter()
                est = aligner.estimate(np.repeat(reference[None], len(good), 0), good)
                back = geometry.invert(geometry.Rigid.of(est.angle, est.tx, est.ty))
                aligned = geometry.warp(torch.as_tensor(good), back.angle, back.tx, back.ty,
                                        mode="bicubic")
                score = correntropy(aligned, ref_t[None], mask)
                yield (start + np.nonzero(finite)[0], est, aligned, score.numpy().copy(),
                       time.perf_counter() - t0)
            bar.update(len(images))


def count_finite(particles: ParticleSet, batch_size: int, log=print,
                 required: bool = True) -> int:
    """Particles without NaN/Inf pixels (one reading pass); warns with the count of the rest.
    ``required``: none at all is an error (one process's share may be empty)."""
    good = sum(int(f.sum()) for _, _, f in particles.batches(batch_size))
    if good == 0 and required:  # the error alone: a warning before it would be a second line
        raise InputError("no particle without NaN/Inf pixels", particles.path)
    if good < particles.n:
        log(f"warning: {particles.n - good} of {particles.n} particles have NaN/Inf pixels and "
            "are left out")
    return good


@dataclass
class Part:
    """The alignment of some particles: per aligned particle its input position, transform and
    score, and the sum of the aligned images (for the average)."""

    index: np.ndarray
    angle: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    score: np.ndarray
    total: np.ndarray  # (N, N) float64
    seconds: float

    @classmethod
    def merge(cls, parts: list[Part]) -> Part:
        fields = ("index", "angle", "tx", "ty", "score")
        return cls(*(np.concatenate([getattr(q, f) for q in parts]) for f in fields),
                   total=sum(q.total for q in parts), seconds=max(q.seconds for q in parts))


def align_part(particles: ParticleSet, reference: np.ndarray, aligner: Aligner,
               stack_path: Path, batch_size: int, progress: bool, log=print,
               offset: int = 0, required: bool = True, workers: int = 0,
               partial: Path | None = None, resume: bool = False,
               save_every: int = 0) -> Part:
    """Align ``particles`` (input positions counted from ``offset``); their aligned images go
    to ``stack_path``.

    ``partial``: a folder where the run keeps what it has done (the aligned images so far and
    the results, saved every ``SAVE_SECONDS`` or every ``save_every`` batches), so that after
    a crash ``resume`` goes on from the last saved batch; it is removed at the end."""
    size = particles.size
    good = count_finite(particles, batch_size, log, required)
    # results go into arrays made once: small per-batch objects kept alive between the big
    # temporaries of each batch fragment the heap (resident memory grew 3-4 MB per batch)
    index = np.empty(good, np.int64)
    angle, tx, ty, score = (np.empty(good) for _ in range(4))
    total = torch.zeros(size, size, dtype=torch.float64)
    seconds, written, first = 0.0, 0, 0
    run = {"input": str(particles.path), "n": particles.n, "good": good, "offset": offset,
           "batch": batch_size, "aligner": aligner.name,
           "reference": float(np.abs(reference).sum())}
    saved = load_partial(partial, run, log) if partial is not None and resume else None
    if saved is not None:
        written, first, seconds = int(saved["written"]), int(saved["next"]), float(saved["seconds"])
        for name, arr in (("index", index), ("angle", angle), ("tx", tx), ("ty", ty),
                          ("score", score)):
            arr[:written] = saved[name]
        total += torch.from_numpy(saved["total"])
    elif partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    last_save, batches = time.time(), 0
    work = None if partial is None else partial / "aligned.mrcs"
    with mrc_stack_writer(stack_path, good, size, particles.pixel_size, work=work,
                          resume_at=written) as put:
        for where, est, aligned, scores, took in aligned_batches(
                particles, reference, aligner, batch_size, progress, workers=workers,
                first=first):
            put(written, aligned.numpy())
            rows = slice(written, written + len(where))
            index[rows], score[rows] = where + offset, scores
            angle[rows], tx[rows], ty[rows] = est.angle, est.tx, est.ty
            written += len(where)
            total += aligned.double().sum(dim=0)
            seconds += took
            batches += 1
            if partial is not None and (time.time() - last_save > SAVE_SECONDS
                                        or (save_every and batches % save_every == 0)):
                done = min((int(where[-1]) // batch_size + 1) * batch_size, particles.n)
                save_partial(partial, run, written, done, seconds, total.numpy(),
                             index, angle, tx, ty, score)
                last_save = time.time()
    if partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
    return Part(index, angle, tx, ty, score, total.numpy(), seconds)


#: how often a run keeps its results for --resume
SAVE_SECONDS = 60.0


def save_partial(partial: Path, run: dict, written: int, done: int, seconds: float,
                 total: np.ndarray, index, angle, tx, ty, score) -> None:
    """What a resumed run needs: the results of the first ``written`` aligned particles, the
    particle to go on from, and the run they belong to. Saved atomically."""
    with atomic_output(partial / "state.npz") as tmp:
        np.savez(tmp, run=json.dumps(run, sort_keys=True), written=written, next=done,
                 seconds=seconds, total=total, index=index[:written], angle=angle[:written],
                 tx=tx[:written], ty=ty[:written], score=score[:written])


def load_partial(partial: Path, run: dict, log) -> dict | None:
    """The saved state of the same run, or ``None`` (then it starts afresh)."""
    path = partial / "state.npz"
    if not path.exists() or not (partial / "aligned.mrcs").exists():
        log("nothing to resume: starting afresh")
        return None
    with np.load(path) as z:
        state = {k: z[k] for k in z.files}
    if json.loads(str(state["run"])) != json.loads(json.dumps(run, sort_keys=True)):
        log("the saved run differs (input, reference, method or batch size): starting afresh")
        return None
    log(f"resuming after {int(state['written'])} aligned particles")
    return state


def align_stack(
    particles: ParticleSet,
    reference: np.ndarray,
    aligner: Aligner,
    out_dir: str | Path,
    batch_size: int = 64,
    progress: bool = True,
    log=print,
    record: dict | None = None,
    ranks: Ranks | None = None,
    workers: int = 0,
    resume: bool = False,
    save_every: int = 0,
) -> dict:
    """Align, write the outputs, return the summary (counts, mean score, particles/s) that
    ``align.json`` holds with ``record`` (e.g. how the reference was made).

    Under ``torchrun`` (``ranks``): each process aligns one contiguous slice of the stack into
    its own part (``out_dir/.parts``); rank 0 then merges the parts, in input order, into the
    same outputs one process writes, and returns the summary (the others return ``{}``).

    One process keeps its progress in ``out_dir/.partial`` (see :func:`align_part`): killed,
    it goes on from its last saved batch when called again with ``resume``."""
    ranks = ranks or Ranks()
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        paths = {name: check_writable(out_dir / name) for name in OUTPUTS}
        return _align_and_write(particles, reference, aligner, out_dir, paths, batch_size,
                                progress, log, record, ranks, workers, resume, save_every)
    except Exception:
        # bad input or a failed write: nothing stays behind, not even the folder this call
        # made (an interrupted or killed run keeps .partial for --resume)
        shutil.rmtree(out_dir / ".partial", ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _align_and_write(particles, reference, aligner, out_dir: Path, paths: dict,
                     batch_size: int, progress: bool, log, record, ranks: Ranks, workers: int,
                     resume: bool, save_every: int) -> dict:
    with all_or_nothing() as finished:
        if not ranks.active:
            part = align_part(particles, reference, aligner, paths["aligned.mrcs"],
                              batch_size, progress, log, workers=workers,
                              partial=out_dir / ".partial", resume=resume,
                              save_every=save_every)
            finished.append(paths["aligned.mrcs"])
        else:
            part = align_shared(particles, reference, aligner, out_dir, paths, batch_size,
                                progress, log, ranks, workers)
            if not ranks.main:
                return {}
            finished.append(paths["aligned.mrcs"])
        return write_outputs(particles, reference, aligner, part, paths, finished, record)


def align_shared(particles, reference, aligner, out_dir: Path, paths: dict, batch_size: int,
                 progress: bool, log, ranks: Ranks, workers: int = 0) -> Part | None:
    """This process's slice into ``out_dir/.parts``; on rank 0, the merged :class:`Part` with
    ``aligned.mrcs`` written from the parts' stacks (the parts are removed)."""
    parts = out_dir / ".parts"
    parts.mkdir(exist_ok=True)
    bounds = np.linspace(0, particles.n, ranks.world + 1).astype(int)
    lo, hi = bounds[ranks.rank], bounds[ranks.rank + 1]
    mine = align_part(particles.subset(np.arange(lo, hi)), reference, aligner,
                      parts / f"aligned-{ranks.rank}.mrcs", batch_size,
                      progress and ranks.main, log, offset=lo, required=False,
                      workers=workers)
    with atomic_output(parts / f"part-{ranks.rank}.npz") as tmp:
        np.savez(tmp, **{k: v for k, v in vars(mine).items()})
    distributed.barrier(ranks)
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
    with mrc_stack_writer(paths["aligned.mrcs"], len(part.index), particles.size,
                          particles.pixel_size) as put:
        written = 0
        for r, piece in enumerate(found):
            if len(piece.index):
                with MrcStack(parts / f"aligned-{r}.mrcs") as stack:
                    for start in range(0, stack.n, batch_size):
                        block = stack.raw(slice(start, min(start + batch_size, stack.n)))
                        put(written, block)
                        written += len(block)
    distributed.barrier(ranks)
    shutil.rmtree(parts, ignore_errors=True)
    return part


def write_outputs(particles, reference, aligner, part: Part, paths: dict, finished: list,
                  record: dict | None) -> dict:
    """``average.mrc``, ``particles.star``, ``average.png`` and ``align.json`` from the
    alignment (``aligned.mrcs`` is written already); returns the summary."""
    good = len(part.index)
    average = (part.total / good).astype(np.float32)
    write_mrc(paths["average.mrc"], average, particles.pixel_size, stack=False)
    finished.append(paths["average.mrc"])
    write_star(paths["particles.star"], particles, part.index, part.angle, part.tx, part.ty,
               part.score)
    finished.append(paths["particles.star"])
    plot_average(reference, average, paths["average.png"], good, float(part.score.mean()))
    finished.append(paths["average.png"])
    summary = {"particles": particles.n, "aligned": good, "skipped": particles.n - good,
               "mean_correntropy": float(part.score.mean()),
               "correntropy": "mean(exp(-(x - y)^2)), both normalised to zero mean and "
               "unit variance inside the disc of radius N/2 - max_shift - 1",
               "particles_per_s": good / float(part.seconds), "aligner": aligner.name,
               "input": str(particles.path), **(record or {})}
    write_json(summary, paths["align.json"])
    finished.append(paths["align.json"])
    return summary


def write_star(path: Path, particles: ParticleSet, index: np.ndarray, angle: np.ndarray,
               tx: np.ndarray, ty: np.ndarray, score: np.ndarray) -> None:
    psi, origin_x, origin_y = geometry.to_relion(geometry.Rigid.of(angle, tx, ty))
    extra: dict[str, np.ndarray] = {}
    group: np.ndarray | int = 1
    if particles.optics is not None and "rlnOpticsGroup" in particles.optics.columns:
        # a particles block may leave out the column when there is one group (read_particles_star)
        group = int(particles.optics["rlnOpticsGroup"].iloc[0])
    if particles.rows is not None:  # keep the input's own columns, except the pose
        pose = ("rlnImageName", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
                "rlnOriginX", "rlnOriginY", "rlnOpticsGroup", "rlnUdlCorrentropy")
        rows = particles.rows.iloc[index]
        extra = {c: rows[c].to_numpy() for c in rows.columns if c not in pose}
        if particles.optics is not None and "rlnOpticsGroup" in rows.columns:
            group = rows["rlnOpticsGroup"].to_numpy()
    extra["rlnUdlCorrentropy"] = score
    pixel = particles.pixel_size if particles.pixel_sizes is None \
        else particles.pixel_sizes[index]  # origins in each particle's own Angstrom
    write_particles_star(path, image_names(particles, index), psi, origin_x, origin_y,
                         pixel, particles.size, extra=extra, optics=particles.optics,
                         optics_group=group)


def image_names(particles: ParticleSet, index: np.ndarray) -> list[str]:
    """``rlnImageName`` of the particles at ``index`` for a STAR file written anywhere: the
    input's own name where its stack path leads to the same file from the current folder
    (RELION's convention: paths relative to the project folder), else the stack's absolute
    path (a name relative to the input STAR's folder, or an .mrcs input's bare file name,
    would not resolve from the output's folder)."""
    stem: dict[str, str | None] = {}  # per stack: its absolute path, or None to keep names
    names = []
    for i in index:
        name, stack = particles.names[i], str(particles.stack_path[i])
        if stack not in stem:
            absolute = Path(stack).resolve()
            named = Path(name.split("@", 1)[1].strip())
            stem[stack] = None if named.exists() and named.resolve() == absolute else str(absolute)
        kept = stem[stack] is None
        names.append(name if kept else f"{particles.stack_index[i] + 1}@{stem[stack]}")
    return names


def plot_average(reference: np.ndarray, average: np.ndarray, path: Path, n: int,
                 score: float) -> None:
    """Reference beside the average of the aligned particles (like the paper's Fig. 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.7))
    for ax, img, title in ((axes[0], reference, "reference"),
                           (axes[1], average, f"average of {n} aligned particles")):
        ax.imshow(img, cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"mean correntropy to the reference: {score:.3f}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["align_stack", "OUTPUTS"]
