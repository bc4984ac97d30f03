"""Batched prediction of the network's outputs and angles."""

from __future__ import annotations

import torch

from udl_align.network.losses import angle_of
from udl_align.network.models import AlignNet


def predict_outputs(model: AlignNet, a: torch.Tensor, b: torch.Tensor, batch: int = 128):
    """Raw head outputs (on CPU) for already prepared inputs, in eval mode."""
    return predict_against_each(model, a, [b], batch)[0]


@torch.no_grad()
def predict_against_each(model: AlignNet, a: torch.Tensor, bs: list[torch.Tensor],
                         batch: int = 128) -> list[torch.Tensor]:
    """Raw head outputs (on CPU) of ``a`` against each of the prepared inputs ``bs`` (e.g. the
    turns of one stack), in eval mode: each batch of ``a`` is embedded once, not once per
    ``b`` (test-time turns cost a quarter less per turn)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out: list[list[torch.Tensor]] = [[] for _ in bs]
    for i in range(0, len(a), batch):
        fa = model.embed(a[i : i + batch].to(dev))
        for acc, b in zip(out, bs, strict=True):
            acc.append(model.compare(fa, model.embed(b[i : i + batch].to(dev))).cpu())
    model.train(was_training)
    return [torch.cat(acc) for acc in out]


def predict_angles(model: AlignNet, a: torch.Tensor, b: torch.Tensor, batch: int = 128):
    """Raw network angles (degrees, offset C not removed, on CPU) for prepared inputs."""
    return angle_of(predict_outputs(model, a, b, batch), model.cfg.head)
