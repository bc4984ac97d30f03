import numpy as np
import pytest
import torch

from udl_align import geometry as g


def test_positive_angle_turns_counter_clockwise_as_displayed():
    f = np.zeros((9, 9), np.float32)
    f[4, 5] = 1.0  # one pixel right of the centre (4, 4)
    assert tuple(np.argwhere(g.apply(f, (90, 0, 0)) > 0.5)[0]) == (3, 4)  # one pixel up
    torch_out = g.warp(torch.from_numpy(f)[None], 90.0)[0].numpy()
    assert tuple(np.argwhere(torch_out > 0.5)[0]) == (3, 4)


def test_shift_moves_content_along_x_and_y():
    f = np.zeros((9, 9), np.float32)
    f[4, 4] = 1.0
    assert tuple(np.argwhere(g.apply(f, (0, 2, -1)) > 0.5)[0]) == (3, 6)
    assert tuple(np.argwhere(g.fourier_shift(f, 2, -1) > 0.5)[0]) == (3, 6)


def test_centre_is_n_over_2_for_even_and_odd_sizes():
    for n in (8, 9):
        f = np.zeros((n, n), np.float32)
        f[n // 2, n // 2] = 1.0
        out = g.apply(f, (123.0, 0, 0), order=1)
        assert out[n // 2, n // 2] == pytest.approx(1.0)


def test_rotation_matrix_matches_paper_eq9():
    r = g.rotation_matrix(30.0)
    a = np.deg2rad(30.0)
    assert np.allclose(r, [[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    assert np.allclose(g.rotation_matrix(90.0) @ [1, 0], [0, -1])


rng = np.random.default_rng(0)
RANDOM_T = [
    (float(a), float(x), float(y))
    for a, x, y in zip(rng.uniform(-400, 720, 12), rng.uniform(-6, 6, 12),
                       rng.uniform(-6, 6, 12), strict=True)
]


@pytest.mark.parametrize("t", RANDOM_T)
def test_compose_and_invert_round_trip(t):
    t1 = g.Rigid.of(*t)
    t2 = g.Rigid.of(37.0, -1.25, 2.5)
    back = g.compose(g.compose(t1, t2), g.invert(t2))
    assert g.angle_error(back.angle, t1.angle) < 1e-9
    assert np.allclose([back.tx, back.ty], [t1.tx, t1.ty])
    ident = g.compose(t1, g.invert(t1))
    assert g.angle_error(ident.angle, 0.0) < 1e-9 and np.allclose([ident.tx, ident.ty], 0)


@pytest.mark.parametrize("t", RANDOM_T[:6])
def test_apply_composition_equals_composed_apply(photo, t):
    img = photo[150:278, 200:328]
    t1, t2 = g.Rigid.of(*t), g.Rigid.of(-71.0, 3.5, -0.75)
    twice = g.apply(g.apply(img, t1), t2)
    once = g.apply(img, g.compose(t1, t2))
    inner = g.soft_circular_mask(128, 40) > 0.99
    # two interpolations against one: ~1% of the contrast; the wrong order is far off
    assert np.abs(twice - once)[inner].mean() < 0.03 * img.std()
    wrong = g.apply(img, g.compose(t2, t1))
    assert np.abs(twice - wrong)[inner].mean() > 0.1 * img.std()


@pytest.mark.parametrize("t", RANDOM_T[:6])
def test_align_undoes_apply_numpy_and_torch(photo, t):
    img = photo[150:278, 200:328]
    inner = g.soft_circular_mask(128, 40) > 0.99
    back = g.align(g.apply(img, t), t)
    assert np.abs(back - img)[inner].mean() < 0.03 * img.std()
    tt = g.Rigid.of(*t)
    x = torch.from_numpy(img)[None]
    fwd = g.warp(x, tt.angle, tt.tx, tt.ty, mode="bicubic")
    inv = g.invert(tt)
    back_t = g.warp(fwd, inv.angle, inv.tx, inv.ty, mode="bicubic")[0].numpy()
    assert np.abs(back_t - img)[inner].mean() < 0.05 * img.std()


def test_torch_warp_agrees_with_numpy_apply_in_a_batch(photo):
    imgs = np.stack([photo[100:164, 100:164], photo[300:364, 250:314]])
    angles, txs, tys = np.array([12.5, 250.0]), np.array([1.5, -3.0]), np.array([-2.25, 0.5])
    out = g.warp(torch.from_numpy(imgs), angles, txs, tys, mode="bicubic").numpy()
    inner = g.soft_circular_mask(64, 24) > 0.99
    for i in range(2):
        ref = g.apply(imgs[i], (angles[i], txs[i], tys[i]))
        assert np.abs(out[i] - ref)[inner].mean() < 0.02 * imgs[i].std()


def test_fourier_shift_is_exact_and_invertible(photo):
    from scipy import ndimage

    # band-limited and periodic (the Nyquist bin of a real image cannot move by a fraction)
    img = ndimage.gaussian_filter(photo[200:264, 200:264], 1.5, mode="wrap")
    moved = g.fourier_shift(img, 2.3, -1.7)
    back = g.fourier_shift(moved, -2.3, 1.7)
    assert np.abs(back - img).max() < 1e-3 * img.std()
    whole = g.fourier_shift(img, 3, 5)
    assert np.allclose(whole, np.roll(img, (5, 3), axis=(0, 1)), atol=1e-4)
    batch = g.fourier_shift(torch.from_numpy(np.stack([img, img])), torch.tensor([1.0, 0.0]),
                            torch.tensor([0.0, 2.0]))
    assert torch.allclose(batch[0], torch.from_numpy(np.roll(img, 1, axis=1)), atol=1e-4)


def test_angle_difference_error_and_wrap():
    assert g.angle_error(359.0, 1.0) == pytest.approx(2.0)
    assert g.angle_error(10.0, 190.0) == pytest.approx(180.0)
    assert g.angle_difference(1.0, 359.0) == pytest.approx(2.0)
    assert g.angle_difference(359.0, 1.0) == pytest.approx(-2.0)
    w = g.wrap360([-1e-14, 360.0, 725.0, -90.0])
    assert np.all((w >= 0) & (w < 360)) and w[2] == pytest.approx(5.0) and w[3] == 270.0


def test_circular_mean_handles_the_seam():
    assert g.angle_error(g.circular_mean([350.0, 10.0, 0.0]), 0.0) < 1e-9
    assert g.circular_mean([90.0, 180.0], weights=[1.0, 0.0]) == pytest.approx(90.0)
    per_row = g.circular_mean([[359.0, 1.0], [100.0, 120.0]], axis=1)
    assert g.angle_error(per_row, [0.0, 110.0]).max() < 1e-9


def test_soft_mask_shape():
    m = g.soft_circular_mask(64, 20, edge=4)
    assert m[32, 32] == 1.0 and m[0, 0] == 0.0
    assert m[32, 32 + 15] == 1.0 and m[32, 32 + 21] == 0.0
    assert 0 < m[32, 32 + 18] < 1


def relion_particle(reference: np.ndarray, psi: float, origin_x: float, origin_y: float):
    """RELION's forward model written out on its own, from its conventions and not from
    ``geometry``: the reference rotated by ``A(psi)`` (value at ``r`` taken from ``A^T r``),
    observed with its content displaced by ``-origin`` (``obs(q) = rotated(q + origin)``).
    One ``scipy.ndimage.affine_transform`` in ``(row, column)`` index order."""
    from scipy import ndimage

    n = reference.shape[-1]
    c, s = np.cos(np.deg2rad(psi)), np.sin(np.deg2rad(psi))
    a_t = np.array([[c, -s], [s, c]])  # A^T in (x, y)
    matrix_yx = np.array([[a_t[1, 1], a_t[1, 0]], [a_t[0, 1], a_t[0, 0]]])
    shift_xy = a_t @ np.array([origin_x, origin_y])
    ctr = np.array([n // 2, n // 2], float)
    offset = ctr - matrix_yx @ ctr + shift_xy[::-1]
    return ndimage.affine_transform(reference, matrix_yx, offset=offset, order=3)


@pytest.mark.parametrize("psi,ox,oy", [(30.0, 4.0, -2.5), (200.0, -7.0, 3.0), (90.0, 0.0, 6.0)])
def test_relion_mapping_matches_relions_formulas(photo, psi, ox, oy):
    ref = photo[200:264, 200:264].astype(np.float64)
    mine = g.apply(ref, g.from_relion(psi, ox, oy))
    theirs = relion_particle(ref, psi, ox, oy)
    inner = g.soft_circular_mask(64, 20, edge=1) > 0.99
    assert np.abs(mine - theirs)[inner].max() < 1e-6
    back = g.to_relion(g.from_relion(psi, ox, oy))
    assert np.allclose([float(v) for v in back], [psi, ox, oy])
    # and the direction: a particle moved right (tx > 0) has a negative rlnOriginX
    assert g.to_relion(g.Rigid.of(0.0, 5.0, 0.0))[1] == -5.0


def test_warp_carries_gradients_and_the_same_values():
    import torch

    from udl_align.geometry import warp

    img = torch.rand(2, 16, 16)
    angle = torch.tensor([10.0, 200.0], requires_grad=True)
    shift = torch.tensor([1.5, -2.0], requires_grad=True)
    out = warp(img, angle, shift, -shift)
    out.sum().backward()
    assert angle.grad is not None and shift.grad is not None
    with torch.no_grad():
        assert torch.allclose(out, warp(img, angle, shift, -shift))
