"""What a stack alignment writes into its output folder.

* ``particles.star``: RELION 3.1, one row per aligned particle in input order, with
  ``rlnImageName``, ``rlnAnglePsi``, ``rlnOriginXAngst``/``YAngst`` (each particle's own
  pixel size) and the score ``rlnUdlCorrentropy``; the input table's other columns
  (defocus, ...) and its optics block are kept;
* ``aligned.mrcs``: each particle brought onto the reference (written while aligning);
* ``average.mrc`` (the input's pixel size) and ``average.png`` (reference beside average);
* ``align.json``: counts, mean correntropy, particles/s, and how the reference was made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from udl_align import geometry
from udl_align.data.stacks import ParticleSet
from udl_align.io.files import check_writable, save_figure, write_json
from udl_align.io.mrc import write_mrc
from udl_align.io.particle_files import ParticlePoses, write_particles_star
from udl_align.pipelines.aligning import SCORE, Part

OUTPUTS = ("particles.star", "aligned.mrcs", "average.mrc", "average.png", "align.json")

#: the input's columns not copied to particles.star: the pose written anew and the score
POSE_COLUMNS = ("rlnImageName", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
                "rlnOriginX", "rlnOriginY", "rlnOpticsGroup", "rlnUdlCorrentropy")


def output_paths(out_dir: Path) -> dict[str, Path]:
    """Each of :data:`OUTPUTS` in ``out_dir``, checked to be writable."""
    return {name: check_writable(Path(out_dir) / name) for name in OUTPUTS}


def write_outputs(particles: ParticleSet, reference: np.ndarray, aligner_name: str,
                  part: Part, paths: dict[str, Path], finished: list[Path],
                  record: dict | None) -> dict:
    """``average.mrc``, ``particles.star``, ``average.png`` and ``align.json`` from the
    alignment (``aligned.mrcs`` is written already), each appended to ``finished`` when
    written; returns the summary (what ``align.json`` holds, with ``record``)."""
    good = len(part.index)
    average = (part.total / good).astype(np.float32)
    write_mrc(paths["average.mrc"], average, particles.pixel_size, stack=False)
    finished.append(paths["average.mrc"])
    write_particles_star(paths["particles.star"], particle_poses(particles, part))
    finished.append(paths["particles.star"])
    plot_average(reference, average, paths["average.png"], good, float(part.score.mean()))
    finished.append(paths["average.png"])
    summary = {"particles": particles.n, "aligned": good, "skipped": particles.n - good,
               "mean_correntropy": float(part.score.mean()), "correntropy": SCORE,
               "particles_per_s": good / float(part.seconds), "aligner": aligner_name,
               "input": str(particles.path), **(record or {})}
    write_json(summary, paths["align.json"])
    finished.append(paths["align.json"])
    return summary


def particle_poses(particles: ParticleSet, part: Part) -> ParticlePoses:
    """The rows of ``particles.star``: the aligned particles with their RELION poses, the
    input's own columns and optics groups, and the score."""
    index = part.index
    psi, origin_x, origin_y = geometry.to_relion(geometry.Rigid.of(part.angle, part.tx,
                                                                   part.ty))
    extra: dict[str, np.ndarray] = {}
    group: np.ndarray | int = 1
    if particles.optics is not None and "rlnOpticsGroup" in particles.optics.columns:
        # a particles block may leave out the column when there is one group (read_particles_star)
        group = int(particles.optics["rlnOpticsGroup"].iloc[0])
    if particles.rows is not None:  # keep the input's own columns, except the pose
        rows = particles.rows.iloc[index]
        extra = {c: rows[c].to_numpy() for c in rows.columns if c not in POSE_COLUMNS}
        if particles.optics is not None and "rlnOpticsGroup" in rows.columns:
            group = rows["rlnOpticsGroup"].to_numpy()
    extra["rlnUdlCorrentropy"] = part.score
    pixel = particles.pixel_size if particles.pixel_sizes is None \
        else particles.pixel_sizes[index]  # origins in each particle's own Angstrom
    return ParticlePoses(image_names(particles, index), psi, origin_x, origin_y, pixel,
                         particles.size, extra=extra, optics=particles.optics,
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


__all__ = ["OUTPUTS", "output_paths", "write_outputs", "particle_poses", "image_names",
           "plot_average"]
