"""A reference made from the stack itself, for a stack alignment without a reference.

1. **Seed.** ``subset`` particles drawn at random (seeded). The first is the starting
   reference; the subset is aligned to it and averaged, and the subset is aligned to that
   average again, ``seed_rounds`` times: one noisy particle only breaks the rotational
   symmetry, the subset's average replaces it at once.
2. **Rounds.** All particles are aligned to the reference and averaged; the average is the next
   reference. A round reports the mean change of the particles' angles since the last round,
   the mean correntropy to the reference, and the correlation between consecutive averages.
   It stops when the angles moved less than ``tolerance`` degrees on average, or after
   ``rounds`` rounds.

Every new reference is re-centred on its centre of mass (of the smoothed absolute deviation
from its median, so the particle's contrast sign does not matter): a seed particle sits up to
``max_shift`` off-centre, and the others would then need twice the shift range to reach it.
The result's orientation is the seed's (any in-plane turn of a reference-free average is as
good as another).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from udl_align import geometry
from udl_align.aligners.base import Aligner
from udl_align.data.stacks import ParticleSet
from udl_align.errors import InputError
from udl_align.pipelines.aligning import aligned_batches


def recentre(image: np.ndarray) -> np.ndarray:
    """``image`` moved so that its centre of mass (see the module doc) is the centre pixel."""
    n = image.shape[-1]
    weight = ndimage.gaussian_filter(np.abs(image - np.median(image)), max(n / 32, 1.0))
    weight *= geometry.soft_circular_mask(n, n / 2 - 2)
    yy, xx = geometry.centred_grid(n)
    total = weight.sum()
    if total <= 0:
        return image
    dx, dy = (weight * xx).sum() / total, (weight * yy).sum() / total
    return geometry.apply(image, (0.0, -dx, -dy), fill=float(np.median(image))).astype(
        np.float32)


def average_aligned(particles: ParticleSet, reference: np.ndarray, aligner: Aligner,
                    batch_size: int, progress: bool = False, desc: str | None = None):
    """The average of all finite particles aligned to ``reference``, their angles (NaN for
    skipped particles) and mean correntropy."""
    total = torch.zeros(particles.size, particles.size, dtype=torch.float64)
    angle = np.full(particles.n, np.nan)
    score = np.full(particles.n, np.nan)  # arrays made once (see aligning.Part.empty)
    for index, est, aligned, scores, _ in aligned_batches(particles, reference, aligner,
                                                          batch_size, progress, desc):
        total += aligned.double().sum(dim=0)
        angle[index], score[index] = est.angle, scores
    count = int(np.isfinite(score).sum())
    return (total / max(count, 1)).float().numpy(), angle, float(np.nanmean(score))


def reference_free(
    particles: ParticleSet,
    aligner: Aligner,
    batch_size: int = 64,
    rounds: int = 5,
    subset: int = 200,
    seed_rounds: int = 2,
    tolerance: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    log=print,
) -> tuple[np.ndarray, list[dict]]:
    """The reference and the record of each round (see the module doc)."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(particles.n, min(subset, particles.n), replace=False))
    some = particles.subset(pick)
    start = next((images[finite][0] for _, images, finite in some.batches(batch_size)
                  if finite.any()), None)
    if start is None:
        raise InputError(f"none of the {some.n} particles sampled for the first reference is "
                         "free of NaN/Inf pixels", particles.path)
    reference = recentre(start.astype(np.float32))
    history: list[dict] = []
    for r in range(seed_rounds):
        average, _, score = average_aligned(some, reference, aligner, batch_size)
        reference = recentre(average)
        history.append({"round": f"seed {r + 1}", "particles": some.n, "mean_correntropy": score})
    previous_angle = None
    for r in range(rounds):
        average, angle, score = average_aligned(particles, reference, aligner, batch_size,
                                                progress, desc=f"reference-free round {r + 1}")
        entry = {"round": r + 1, "particles": particles.n, "mean_correntropy": score,
                 "average_vs_previous_corr": float(np.corrcoef(average.ravel(),
                                                               reference.ravel())[0, 1])}
        if previous_angle is not None:
            moved = geometry.angle_error(angle, previous_angle)
            entry["mean_angle_change_deg"] = float(np.nanmean(moved))
        history.append(entry)
        log(f"reference-free round {r + 1}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in entry.items() if isinstance(v, float)))
        reference, previous_angle = recentre(average), angle
        if entry.get("mean_angle_change_deg", np.inf) < tolerance:
            break
    return reference, history


__all__ = ["reference_free", "average_aligned"]
