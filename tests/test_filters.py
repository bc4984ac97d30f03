import numpy as np
import pytest
import torch

from udl_align import filters, repair_kernel
from udl_align.aligners import make_aligner
from udl_align.data.noise import parse_noise
from udl_align.filters import NOISY, impulse_mask, median3, repair_impulses, roughness
from udl_align.geometry import angle_error


def test_continuous_noise_passes_through_untouched(photo):
    clean = np.stack([photo[:128, :128], photo[200:328, 200:328]])
    noisy = torch.from_numpy(parse_noise("gaussian:0.1").add(clean, np.random.default_rng(0)))
    assert repair_impulses(noisy) is noisy


def test_a_saturated_region_is_not_an_impulse(photo):
    x = torch.from_numpy(photo[100:164, 100:164].copy())[None] * 0.8 + 0.1
    x[0, 10:30, 10:30] = 1.0  # a clipped highlight: 400 pixels at the maximum, not isolated
    x[0, 40:50, 40:50] = 0.0
    found = impulse_mask(x)
    # as a 3x3 median would, it takes a square's four corners only (4 of 9 at the extreme)
    corners = [(10, 10), (10, 29), (29, 10), (29, 29), (40, 40), (40, 49), (49, 40), (49, 49)]
    assert sorted(map(tuple, found[0].nonzero().tolist())) == sorted(corners)
    changed = repair_impulses(x) != x
    assert torch.equal(changed, found)


@pytest.mark.parametrize("kind", ["saltpepper:0.1", "saltpepper:0.3", "saltpepper-patch:0.2"])
def test_salt_and_pepper_is_found_and_filled(photo, kind):
    clean = np.stack([photo[:128, :128], photo[200:328, 200:328]])
    noisy = parse_noise(kind).add(clean, np.random.default_rng(1))
    hit = noisy != clean
    found = impulse_mask(torch.from_numpy(noisy)).numpy()
    assert found[hit].mean() > 0.85  # most impulses found ...
    assert found[~hit].mean() < 0.01  # ... and almost nothing else
    repaired = repair_impulses(torch.from_numpy(noisy)).numpy()
    assert np.array_equal(repaired[~found], noisy[~found])  # a switching filter
    err_before = np.abs(noisy - clean).mean()
    assert np.abs(repaired - clean).mean() < 0.25 * err_before


def test_repair_keeps_shape_and_batches(photo):
    noisy = parse_noise("saltpepper:0.2").add(np.stack([photo[:64, :64]] * 6),
                                              np.random.default_rng(2))
    x = torch.from_numpy(noisy).reshape(2, 3, 64, 64)
    out = repair_impulses(x)
    assert out.shape == x.shape
    assert torch.equal(out.reshape(6, 64, 64)[4], repair_impulses(x.reshape(6, 64, 64)[4:5])[0])


def test_each_image_of_a_mixed_batch_is_repaired_as_alone(photo):
    clean = np.stack([photo[:96, :96], photo[150:246, 150:246], photo[300:396, 40:136]])
    rng = np.random.default_rng(4)
    impulsive = parse_noise("saltpepper:0.3").add(clean, rng)  # smooth rest: switching
    clipped = np.clip(clean + rng.normal(0, 3 * clean.std(), clean.shape), 0, 1)  # median
    batch = torch.from_numpy(np.concatenate([
        impulsive[:2], clipped[:1], clean[:1], np.full((1, 96, 96), 0.5), impulsive[2:],
        parse_noise("gaussian:0.1").add(clean[1:2], rng)]).astype(np.float32))
    out = repair_impulses(batch)
    alone = torch.cat([repair_impulses(batch[i:i + 1]) for i in range(len(batch))])
    assert torch.equal(out, alone)
    assert torch.equal(out[2], median3(batch[2:3])[0])  # the clipped one: its median
    for i in (3, 4, 6):  # clean, constant and continuous noise: untouched
        assert torch.equal(out[i], batch[i])
    for i in (0, 1, 5):  # impulses gone, every other pixel kept
        found = impulse_mask(batch[i:i + 1])[0]
        assert found.float().mean() > 0.2 and torch.equal(out[i][~found], batch[i][~found])
        lo, hi = batch[i].min(), batch[i].max()
        assert ((out[i][found] == lo) | (out[i][found] == hi)).float().mean() < 0.01


@pytest.mark.skipif(not repair_kernel.available(), reason="numba is not installed")
@pytest.mark.parametrize("kind", ["saltpepper:0.1", "saltpepper:0.3", "saltpepper-patch:0.2",
                                  "clipped", "gaussian:0.1", "clean"])
def test_the_compiled_repair_decides_as_the_torch_one(photo, kind):
    clean = np.stack([photo[:128, :128], photo[200:328, 200:328], photo[50:178, 300:428]])
    rng = np.random.default_rng(6)
    if kind == "clipped":
        noisy = np.clip(clean + rng.normal(0, 3 * clean.std(), clean.shape), 0, 1)
    elif kind == "clean":
        noisy = clean.copy()
        noisy[0, :20, :40] = clean.max()  # a saturated region: looked at, nothing changed
    else:
        noisy = parse_noise(kind).add(clean, rng)
    x = torch.from_numpy(noisy.astype(np.float32))
    reference = repair_impulses(x, compiled=False)
    compiled = repair_impulses(x)
    assert (compiled is x) == (reference is x)
    weights = filters.fill_weights(filters.FILL_SIGMA).double().numpy()
    _, kinds = repair_kernel.repair_images(x.numpy(), filters.MIN_SHARE, NOISY, 2, weights,
                                           threads=2)
    plan = filters.repair_plan(x)
    expected = np.zeros(len(x), np.int8)
    expected[plan.hit.numpy()] = np.where(plan.smooth.numpy(), repair_kernel.SWITCHING,
                                          repair_kernel.MEDIAN)
    assert np.array_equal(kinds, expected)
    # the same pixels; a filled one (a Gaussian-weighted mean) within float32's rounding
    assert torch.allclose(compiled, reference, rtol=1e-6, atol=1e-6)
    filled = impulse_mask(x) & (compiled != x)
    assert torch.equal(compiled[~filled], reference[~filled])


def test_the_torch_repair_takes_over_where_the_compiled_one_fails(photo, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("no such kernel")

    monkeypatch.setattr(repair_kernel, "available", lambda: True)
    monkeypatch.setattr(repair_kernel, "repair_images", broken)
    monkeypatch.setattr(filters, "_COMPILED_FAILED", [])
    noisy = parse_noise("saltpepper:0.2").add(photo[None, :64, :64], np.random.default_rng(7))
    x = torch.from_numpy(noisy.astype(np.float32))
    with pytest.warns(RuntimeWarning, match="no such kernel"):
        out = repair_impulses(x)
    assert torch.equal(out, repair_impulses(x, compiled=False))
    assert filters._COMPILED_FAILED  # not tried again in this process


def test_every_aligner_shares_the_repair(textured_pairs):
    a, b, truth = textured_pairs
    rng = np.random.default_rng(3)
    noise = parse_noise("saltpepper:0.2")
    na, nb = noise.add(a, rng), noise.add(b, rng)
    off = make_aligner("bruteforce", max_shift=10, impulses=False).estimate(na, nb)
    on = make_aligner("bruteforce", max_shift=10).estimate(na, nb)
    assert angle_error(on.angle, truth[:, 0]).mean() < 1.0
    assert angle_error(on.angle, truth[:, 0]).mean() < angle_error(off.angle, truth[:, 0]).mean()


def test_clipped_noise_gets_a_whole_image_median(photo):
    clean = photo[:128, :128]
    rng = np.random.default_rng(5)
    noisy = np.clip(clean + rng.normal(0, 3 * clean.std(), clean.shape), 0, 1).astype(np.float32)
    x = torch.from_numpy(noisy)[None]
    ext = (x == x.min()) | (x == x.max())
    assert roughness(x, ~ext)[0] > NOISY  # the other pixels are noisy too: not impulses
    assert torch.equal(repair_impulses(x), median3(x))


def test_roughness_tells_a_photograph_from_noise(photo):
    clean = torch.from_numpy(photo[:128, :128].copy())[None]
    noise = torch.randn(1, 128, 128, generator=torch.Generator().manual_seed(0))
    every = torch.ones(1, 128, 128, dtype=torch.bool)
    assert roughness(clean, every)[0] < 0.5 < NOISY < roughness(noise, every)[0]


def test_fill_is_the_normalised_convolution_at_the_marked_pixels(photo):
    from scipy import ndimage

    from udl_align.filters import fill_impulses

    rng = np.random.default_rng(6)
    x = photo[:48, :48].astype(np.float64)[None]
    impulses = rng.random(x.shape) < 0.3
    impulses[0, :9, :9] = True  # a corner with no unmarked neighbour in reach
    at = impulses & (rng.random(x.shape) < 0.5)
    d = np.arange(-4, 5)
    kernel = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / 2.0)
    valid = (~impulses[0]).astype(np.float64)
    num = ndimage.convolve(x[0] * valid, kernel, mode="constant")
    den = ndimage.convolve(valid, kernel, mode="constant")
    expected = np.where(den > 1e-3 * kernel.sum(), num / np.maximum(den, 1e-12),
                        (x[0] * valid).sum() / valid.sum())
    out = fill_impulses(torch.from_numpy(x), torch.from_numpy(impulses),
                        torch.from_numpy(at)).numpy()
    assert np.allclose(out[at], expected[at[0]], atol=1e-9)
    assert np.array_equal(out[~at], x[~at])  # nothing else moves
    assert at[0, :5, :5].any() and np.allclose(out[0, :5, :5][at[0, :5, :5]],
                                               (x[0] * valid).sum() / valid.sum())


def test_roughness_on_a_sample_of_rows_and_columns(photo):
    clean = torch.from_numpy(photo[:128, :128].copy())[None]
    noise = torch.randn(1, 128, 128, generator=torch.Generator().manual_seed(1))
    for x in (clean, noise):
        every = torch.ones_like(x, dtype=torch.bool)
        assert abs(float(roughness(x, every, 2)[0] - roughness(x, every)[0])) < 0.05
