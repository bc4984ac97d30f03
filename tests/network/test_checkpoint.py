import numpy as np

from conftest import cut_pair
from udl_align.aligners import make_aligner
from udl_align.network.checkpoint import DEFAULT_MODEL, load_checkpoint

#: what the shipped model gives on the four pairs below (network path, offset C removed),
#: recorded when it was shipped
RECORDED_ANGLE = [30.5945, 144.8495, 257.7293, 352.7207]
RECORDED_TX = [2.7730, -5.0031, -1.0448, 6.4042]
RECORDED_TY = [-2.0196, 3.3283, 5.7425, 1.1457]
PAIRS = [(30.0, 200, 250, 3, -2), (145.0, 300, 200, -5, 4), (260.0, 250, 320, 0, 6),
         (350.0, 180, 180, 7, 1)]


def test_the_shipped_model_gives_its_recorded_angles(photo):
    """A guard on everything between the checkpoint and an angle: the format, the network's
    input preparation, the offset C and the network path's shift step."""
    a, b = zip(*(cut_pair(photo, cy, cx, (ang, tx, ty)) for ang, cy, cx, tx, ty in PAIRS),
               strict=True)
    est = make_aligner("network", model="default", max_shift=10).estimate(np.stack(a),
                                                                        np.stack(b))
    np.testing.assert_allclose(est.angle, RECORDED_ANGLE, atol=2e-3)
    np.testing.assert_allclose(est.tx, RECORDED_TX, atol=2e-3)
    np.testing.assert_allclose(est.ty, RECORDED_TY, atol=2e-3)
    # and its angles are right to within the network alone's few degrees
    truth = np.array([p[0] for p in PAIRS])
    assert np.max(np.abs((est.angle - truth + 180) % 360 - 180)) < 5


def test_the_shipped_model_corrects_its_head_and_refine_skips_the_correction(photo):
    """The shipped model's residual stage runs twice; --refine's prior is the head alone, and
    so is ``residual_steps=0``."""
    a, b = zip(*(cut_pair(photo, cy, cx, (ang, tx, ty)) for ang, cy, cx, tx, ty in PAIRS),
               strict=True)
    a, b = np.stack(a), np.stack(b)
    shipped = make_aligner("network", model="default", max_shift=10)
    assert shipped.model.residual_steps == 2
    head = make_aligner("network", model="default", max_shift=10, residual_steps=0)
    refine = make_aligner("network", model="default", max_shift=10, refine=True)
    assert head.model.residual_steps == 0 and refine.model.residual_steps == 0
    truth = np.array([p[0] for p in PAIRS])

    def error(est):
        return np.abs((est.angle - truth + 180) % 360 - 180)

    assert error(shipped.estimate(a, b)).mean() < error(head.estimate(a, b)).mean()


def test_the_shipped_model_is_an_inference_export():
    state = load_checkpoint(DEFAULT_MODEL)
    assert "optimizer" not in state and state["offset"] is not None
    assert DEFAULT_MODEL.stat().st_size < 10 * 2**20
