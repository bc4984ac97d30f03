"""The independent pair generator (udl_align.data.independent): its truth in the package's
convention, its seeding and its noise."""

import numpy as np
import pytest

from udl_align import geometry
from udl_align.aligners import make_aligner
from udl_align.data.independent import independent_pairs, shift_for, truth_from_shift_then_turn


@pytest.mark.parametrize("angle,sx,sy", [(90.0, 3.0, 0.0), (33.0, -4.0, 7.0), (250.0, 2.5, -6.0)])
def test_shift_then_turn_is_the_formula_in_our_convention(photo, angle, sx, sy):
    # the package's geometry: shift by s, then turn about the centre, against one transform
    img = photo[100:228, 150:278].astype(np.float64)
    moved_then_turned = geometry.apply(geometry.apply(img, (0.0, sx, sy)), (angle, 0.0, 0.0))
    truth = truth_from_shift_then_turn(angle, sx, sy)
    direct = geometry.apply(img, tuple(float(v) for v in truth))
    disc = geometry.soft_circular_mask(128, 40) > 0.99
    assert np.abs(moved_then_turned - direct)[disc].mean() < 0.005  # two resamplings vs one
    naive = geometry.apply(img, (angle, sx, sy))  # the shift taken as it was drawn
    assert np.abs(moved_then_turned - naive)[disc].mean() > 0.05
    # and shift_for inverts it
    back = shift_for(angle, float(truth[1]), float(truth[2]))
    assert back == pytest.approx((sx, sy), abs=1e-9)


def test_independent_pairs_are_seeded_and_bruteforce_recovers_their_truth(photo_dir):
    kw = dict(n=6, size=96, max_shift=8, seed=3, split="all")
    p = independent_pairs(photo_dir, noise="clean", **kw)
    again = independent_pairs(photo_dir, noise="clean", **kw)
    assert np.array_equal(p.a, again.a) and np.array_equal(p.angle, again.angle)
    assert p.a.shape == (6, 96, 96) and p.a.dtype == np.float32
    assert np.all(np.abs(p.tx) <= 8 + 1e-9) and np.all(np.abs(p.ty) <= 8 + 1e-9)
    est = make_aligner("bruteforce", max_shift=8).estimate(p.a, p.b)
    assert geometry.angle_error(est.angle, p.angle).max() < 0.5
    assert np.abs(est.tx - p.tx).max() < 0.3 and np.abs(est.ty - p.ty).max() < 0.3


def test_independent_noise_conditions(photo_dir):
    kw = dict(n=4, size=64, max_shift=4, seed=5, split="all")
    clean = independent_pairs(photo_dir, noise="clean", **kw)
    sp = independent_pairs(photo_dir, noise="saltpepper:0.2", **kw)
    assert np.array_equal(clean.angle, sp.angle)  # the same geometry under every condition
    hit = sp.a != clean.a
    assert set(np.unique(sp.a[hit])) <= {0.0, 1.0}
    assert hit.mean() == pytest.approx(0.2 + 0.2 - 0.04, abs=0.05)
    g = independent_pairs(photo_dir, noise="gaussian:0.5", **kw)
    assert g.a.min() >= 0.0 and g.a.max() <= 1.0  # clipped, as random_noise does by default
    noise_var = (g.a - clean.a).var(axis=(1, 2))
    # variance var/SNR added, some of it clipped away
    snr = clean.a.var(axis=(1, 2)) / noise_var
    assert np.all((snr > 0.5) & (snr < 1.0))
