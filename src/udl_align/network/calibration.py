"""The constant offset C: a UDL network learns ``angle + C`` (only differences are trained).

Label-free (``design.md``): since ``angle(a->b) = -angle(b->a)`` and
``angle(a->b) + angle(b->c) + angle(c->a) = 0`` (mod 360),

* antisymmetry: ``F(a, b) + F(b, a) = 2C``, known modulo 360, so C modulo 180;
* cycles: ``F(a, b) + F(b, c) + F(c, a) = 3C``, so C modulo 120;

and ``C = 3C - 2C`` modulo 360, unique. Each side is a circular mean over many pairs / triples
of views of the same content (unlabelled). For a spectrum network all of this holds on the
doubled circle its outputs live on: C is the offset of ``2 angle``. Labelled (the paper's
way): the circular mean of ``F(a, b) - angle`` over a few pairs with known angles.
"""

from __future__ import annotations

import numpy as np
import torch

from udl_align.geometry import circular_mean, wrap360
from udl_align.network.inputs import model_input
from udl_align.network.models import AlignNet
from udl_align.network.predict import predict_angles


def _prepared(model: AlignNet, images: np.ndarray) -> torch.Tensor:
    return model_input(model.cfg, torch.as_tensor(np.asarray(images, np.float32)))


def offset_label_free(model: AlignNet, views: np.ndarray) -> dict:
    """C from groups of three unlabelled views of one content ``(n, 3, N, N)``.

    Returns ``{"offset", "two_c", "three_c", "n"}`` (degrees).
    """
    v = [_prepared(model, views[:, j]) for j in range(3)]
    ab = predict_angles(model, v[0], v[1]).numpy()
    ba = predict_angles(model, v[1], v[0]).numpy()
    bc = predict_angles(model, v[1], v[2]).numpy()
    ca = predict_angles(model, v[2], v[0]).numpy()
    two_c = float(circular_mean(ab + ba))
    three_c = float(circular_mean(ab + bc + ca))
    # label-free signs of learning, necessary but not sufficient: a network with random outputs
    # closes few 3-cycles (about 8% within 15 deg); one that collapsed to a constant closes
    # them all but its outputs do not spread over the circle (resultant length near 1, where
    # uniform relative angles give near 0); and any F(a, b) = phi(b) - phi(a) passes both
    residual = np.abs((ab + bc + ca - three_c + 180.0) % 360.0 - 180.0)
    resultant = float(np.abs(np.mean(np.exp(1j * np.deg2rad(ab)))))
    return {"offset": float(wrap360(three_c - two_c)), "two_c": two_c, "three_c": three_c,
            "n": int(len(views)), "cycles_within_15deg": float(np.mean(residual < 15.0)),
            "output_resultant": resultant}


def offset_labelled(model: AlignNet, a: np.ndarray, b: np.ndarray, angle: np.ndarray) -> dict:
    """C from pairs with known angles: circular mean of ``F(a, b) - angle`` (``- 2 angle`` for
    a spectrum network, whose outputs live on the doubled circle)."""
    raw = predict_angles(model, _prepared(model, a), _prepared(model, b)).numpy()
    target = model.cfg.angle_factor * np.asarray(angle)
    return {"offset": float(circular_mean(raw - target)), "n": int(len(a))}


def confidence(outputs: torch.Tensor) -> torch.Tensor:
    """How sure a 2-vector head is: the length of its (cos, sin) output. Trained towards 1,
    it shrinks where the network hesitates between angles (their vectors average out)."""
    return outputs[:, :2].norm(dim=1)
