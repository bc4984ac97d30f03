"""Objectives: UDL (paper Eq. 10-14), supervised, and the STN photometric baseline.

UDL. Disturb the two images of a pair by their own random rotations (and small shifts):
``I1' = apply(I1, a1)``, ``I2' = apply(I2, a2)``. If ``theta`` takes ``I1`` onto ``I2`` then
``theta' = theta + a2 - a1`` takes ``I1'`` onto ``I2'``, so ``F(I1, I2) - F(I1', I2') = a1 - a2``
(mod 360) whatever the unknown ``theta``: a pseudo-label. The loss is the circular distance
between the two sides plus, for a single-number output, a range penalty.

The paper's Eq. 13-14 are garbled as printed (Eq. 13 takes a ``min`` of its arguments where a
distance is meant, and Eq. 14, ``max(0, -a) + max(0, r - a)``, is positive everywhere inside the
range). We implement what they intend: ``L_r(a, b)`` = the circular distance
``min(|a - b| mod r, r - |a - b| mod r)``, and ``P_r(a) = max(0, -a) + max(0, a - r)``, zero on
``[0, r]`` (the authors' code does the latter too).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from udl_align import geometry


def circular_distance(x: torch.Tensor, y: torch.Tensor, period: float = 360.0) -> torch.Tensor:
    """``|x - y|`` on a circle of ``period`` degrees, in ``[0, period / 2]``."""
    d = torch.remainder(x - y, period)
    return torch.minimum(d, period - d)


def range_penalty(x: torch.Tensor, period: float = 360.0) -> torch.Tensor:
    """Zero on ``[0, period]``, linear outside (keeps a scalar output in range)."""
    return F.relu(-x) + F.relu(x - period)


def norm_penalty(out: torch.Tensor) -> torch.Tensor:
    """Keeps a 2-vector output near unit length, so ``atan2`` stays well conditioned."""
    return (out[:, :2].norm(dim=1) - 1.0) ** 2


def angle_of(out: torch.Tensor, head: str) -> torch.Tensor:
    if head == "scalar":
        return out[:, 0]
    return torch.rad2deg(torch.atan2(out[:, 1], out[:, 0]))


def regulariser(out: torch.Tensor, head: str) -> torch.Tensor:
    return range_penalty(out[:, 0]) if head == "scalar" else norm_penalty(out)


def udl_loss(
    out_a: torch.Tensor,
    out_b: torch.Tensor,
    target_difference: torch.Tensor,
    head: str,
    period: float = 360.0,
) -> torch.Tensor:
    """Mean of ``L_r(F(A) - F(B), target) + P(F(A)) + P(F(B))`` over the batch (degrees).

    ``target_difference`` is what ``F(A) - F(B)`` must equal, e.g. ``a1 - a2`` for
    ``A = (I1, I2)`` and ``B = (apply(I1, a1), apply(I2, a2))``.
    """
    diff = angle_of(out_a, head) - angle_of(out_b, head)
    loss = circular_distance(diff, target_difference, period)
    return (loss + regulariser(out_a, head) + regulariser(out_b, head)).mean()


def supervised_loss(out: torch.Tensor, angle: torch.Tensor, head: str) -> torch.Tensor:
    """Circular distance to the true angle, plus the range/norm regulariser."""
    return (circular_distance(angle_of(out, head), angle) + regulariser(out, head)).mean()


def stn_transform(out: torch.Tensor, shift_scale: float) -> tuple[torch.Tensor, ...]:
    """Rigid parameters from the STN head: angle from the first two outputs, shift (pixels at
    model size) from the last two, squashed into ``[-shift_scale, shift_scale]``. Unbounded,
    the photometric loss has a degenerate minimum: move ``a`` out of the frame, leaving zeros
    that are closer to ``b`` on average than a misaligned ``a`` (measured: the loss fell to
    ``mean |b|`` while the angle stayed at chance)."""
    return (angle_of(out, "vector"), torch.tanh(out[:, 2]) * shift_scale,
            torch.tanh(out[:, 3]) * shift_scale)


def stn_loss(
    out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, shift_scale: float
) -> torch.Tensor:
    """Photometric loss of the STN baseline: warp ``a`` by the predicted transform (bilinear,
    differentiable) and compare with ``b`` inside ``mask`` (mean absolute difference)."""
    angle, tx, ty = stn_transform(out, shift_scale)
    warped = geometry.warp(a, angle, tx, ty)
    diff = (warped - b).abs() * mask
    return diff.sum(dim=(-2, -1)).mean() / mask.sum() + norm_penalty(out).mean()
