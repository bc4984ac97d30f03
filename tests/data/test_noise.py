"""Noise conditions (udl_align.data.noise): the SNR and proportions asked for, and the
specs refused."""

import numpy as np
import pytest

from udl_align.data.noise import CONDITIONS, measured_snr, parse_noise
from udl_align.errors import InputError


@pytest.mark.parametrize("snr", [0.5, 0.1, 0.05])
def test_gaussian_noise_has_the_asked_snr(photo, snr):
    clean = np.stack([photo[:128, :128], photo[200:328, 200:328]] * 8)
    noisy = parse_noise(f"gaussian:{snr}").add(clean, np.random.default_rng(0))
    assert measured_snr(clean, noisy) == pytest.approx(snr, rel=0.03)


def test_gaussian_snr_inside_a_mask(photo):
    from udl_align.geometry import soft_circular_mask

    mask = soft_circular_mask(128, 40) > 0.5
    clean = np.stack([photo[100:228, 100:228]] * 16)
    noisy = parse_noise("gaussian:0.1").add(clean, np.random.default_rng(1), mask=mask)
    assert measured_snr(clean, noisy, mask) == pytest.approx(0.1, rel=0.03)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.3])
@pytest.mark.parametrize("kind", ["saltpepper", "saltpepper-patch"])
def test_salt_and_pepper_proportions(photo, p, kind):
    clean = photo[:256, :256]
    noisy = parse_noise(f"{kind}:{p}").add(clean, np.random.default_rng(2))
    # the standard reading: the data range's extremes (0 and 1 for a photograph in [0, 1]);
    # the patch variant: the patch's own maximum and minimum
    top, bottom = (1.0, 0.0) if kind == "saltpepper" else (clean.max(), clean.min())
    salt = np.mean((noisy == top) & (clean != top))
    pepper = np.mean((noisy == bottom) & (clean != bottom))
    # salt p, pepper p drawn independently, pepper applied second
    assert salt == pytest.approx(p * (1 - p), abs=0.01)
    assert pepper == pytest.approx(p, abs=0.01)
    assert set(np.unique(noisy[noisy != clean])) <= {np.float32(top), np.float32(bottom)}


def test_salt_and_pepper_outside_zero_one_uses_the_whole_range():
    rng = np.random.default_rng(4)
    scale = np.array([1, 2, 3], np.float32)[:, None, None]
    clean = rng.normal(size=(3, 32, 32)).astype(np.float32) * scale
    noisy = parse_noise("saltpepper:0.2").add(clean, rng)
    # the data range of all the images given, not each image's own
    assert set(np.unique(noisy[noisy != clean])) == {clean.min(), clean.max()}
    assert np.any(noisy[0] == clean.max()) and clean[0].max() < clean.max()


def test_two_calls_never_share_a_realisation(photo):
    rng = np.random.default_rng(3)
    noise = parse_noise("gaussian:0.1")
    clean = photo[:64, :64]
    n1, n2 = noise.add(clean, rng) - clean, noise.add(clean, rng) - clean
    assert abs(np.corrcoef(n1.ravel(), n2.ravel())[0, 1]) < 0.1


def test_clean_is_a_copy(photo):
    clean = photo[:32, :32]
    out = parse_noise("clean").add(clean, np.random.default_rng(0))
    assert np.array_equal(out, clean) and out is not clean


@pytest.mark.parametrize("spec", ["gauss:0.1", "gaussian", "gaussian:-1", "gaussian:abc",
                                  "saltpepper:1.5", "pink:0.1", ""])
def test_bad_specs_give_one_clear_line(spec):
    with pytest.raises(InputError) as info:
        parse_noise(spec)
    assert "\n" not in str(info.value) and "noise spec" in str(info.value)


def test_the_seven_conditions_parse():
    assert [str(parse_noise(c)) for c in CONDITIONS] == list(CONDITIONS)
