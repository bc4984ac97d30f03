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
        # ``a`` and every ``b`` embedded in one call: the small convolutions cost less per
        # image in one batch (2 cores, 64 pairs: the two embeddings 17% faster)
        images = torch.cat([a[i : i + batch]] + [b[i : i + batch] for b in bs]).to(dev)
        fa, *fbs = _split(model.embed(images), 1 + len(bs))
        for acc, fb in zip(out, fbs, strict=True):
            acc.append(model.compare(fa, fb).cpu())
    model.train(was_training)
    return [torch.cat(acc) for acc in out]


def _split(features, parts: int) -> list:
    """:meth:`AlignNet.embed`'s output for ``parts`` equal batches one after the other, as a
    list of each batch's (a tensor, or a tuple of tensors where the residual stage runs)."""
    if isinstance(features, tuple):
        return list(zip(*(_split(f, parts) for f in features), strict=True))
    return list(features.chunk(parts))


def predict_angles(model: AlignNet, a: torch.Tensor, b: torch.Tensor, batch: int = 128):
    """Raw network angles (degrees, offset C not removed, on CPU) for prepared inputs."""
    return angle_of(predict_outputs(model, a, b, batch), model.cfg.head)
