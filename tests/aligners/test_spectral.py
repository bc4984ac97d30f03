"""Spectrum-input networks (the paper's cryo-EM choice) and training pairs from a particle
stack."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import blob_average
from udl_align import geometry as g
from udl_align.cli import main
from udl_align.network.inputs import prepare_input


def particle(n: int = 64) -> np.ndarray:
    """A clean particle: the blob picture inside a soft disc, on zero background."""
    return blob_average(n) * g.soft_circular_mask(n, n / 2 - 12, edge=3.0)


def test_spectrum_input_ignores_shifts_and_half_turns():
    a = particle()
    moved = g.apply(a, (0.0, 5.0, -3.0))
    turned = g.apply(a, (180.0, 0.0, 0.0))
    other = g.apply(a, (60.0, 0.0, 0.0))
    x = prepare_input(torch.from_numpy(np.stack([a, moved, turned, other])), 64,
                      kind="spectrum").numpy()

    def gap(i: int) -> float:
        return float(np.abs(x[i] - x[0]).mean())

    assert gap(1) < 0.1 and gap(2) < 0.1, (gap(1), gap(2))
    assert gap(3) > 3 * max(gap(1), gap(2))


@pytest.mark.parametrize("turns", [2, 3])
def test_the_turn_is_picked_right_on_clean_particles(turns):
    """A spectrum network knows the angle modulo 180, a C_n network modulo 360 / n;
    correlation picks among the candidates."""
    from udl_align.aligners.correlation import Preprocess
    from udl_align.aligners.network import pick_turn

    rng = np.random.default_rng(3)
    a = particle()
    truth = rng.uniform(0, 360, 8)
    shifts = rng.uniform(-4, 4, (8, 2))
    b = np.stack([g.apply(a, (t, x, y)) for t, (x, y) in zip(truth, shifts, strict=True)])
    pre = Preprocess(0.25)
    pa = pre(torch.from_numpy(np.repeat(a[None], 8, 0)).float())
    pb = pre(torch.from_numpy(b).float())
    # what the network gives: the angle modulo 360 / turns, a few degrees off
    known = torch.tensor(np.mod(truth + rng.uniform(-3, 3, 8), 360.0 / turns),
                         dtype=torch.float32)
    picked = pick_turn(pa, pb, known, max_shift=6, turns=turns).numpy()
    assert g.angle_error(picked, truth).max() < 5.0


@pytest.fixture
def particle_star(tmp_path):
    png = tmp_path / "average.png"
    Image.fromarray((blob_average(48) * 255).clip(0, 255).astype(np.uint8)).save(png)
    out = tmp_path / "parts.mrcs"
    assert main(["synth", "cryoem", "--template", str(png), "--out", str(out), "--n", "40",
                 "--size", "48", "--max-shift", "3", "--snr", "100", "--background", "0",
                 "--quiet"]) == 0
    return tmp_path / "parts.star"


def test_stack_pairs_are_two_particles_with_their_true_relative_transform(particle_star):
    from udl_align.data.stack_pairs import StackPairSource
    from udl_align.data.stacks import open_particles

    source = StackPairSource(open_particles(particle_star), seed=1)
    batch = source.sample(6)
    assert not np.allclose(batch.a, batch.b)  # never a particle with itself
    mask = g.soft_circular_mask(48, 18)
    for a, b, t in zip(batch.a, batch.b, np.stack([batch.angle, batch.tx, batch.ty], 1),
                       strict=True):
        right = np.corrcoef((g.apply(a, t) * mask).ravel(), (b * mask).ravel())[0, 1]
        wrong = np.corrcoef((g.apply(a, (t[0] + 90, t[1], t[2])) * mask).ravel(),
                            (b * mask).ravel())[0, 1]
        assert right > 0.95 and right > wrong + 0.1
    views, truth = source.sample_views(4, 3)
    assert views.shape == (4, 3, 48, 48) and np.allclose(truth[:, 0], 0.0, atol=1e-9)
    source.close()


def test_train_on_a_stack_starts_from_the_shipped_model_and_aligns(particle_star, tmp_path,
                                                                     capsys):
    from udl_align.network.checkpoint import DEFAULT_MODEL

    model = tmp_path / "m.pt"
    assert main(["train", "--data", str(particle_star), "--out", str(model), "--steps", "3",
                 "--batch-size", "4", "--val-every", "3", "--quiet"]) == 0
    assert "offset C" in capsys.readouterr().out
    state = torch.load(model, weights_only=True)
    assert state["net"]["input"] == "image" and state["train"]["init"] == "default"
    shipped = torch.load(DEFAULT_MODEL, weights_only=True)
    assert list(state["net"]["channels"]) == list(shipped["net"]["channels"])
    out = tmp_path / "aligned"
    assert main(["align", "--stack", str(particle_star), "--reference",
                 str(tmp_path / "parts_reference.mrc"), "--out-dir", str(out), "--model",
                 str(model), "--refine", "--max-shift", "3", "--quiet"]) == 0
    assert (out / "particles.star").exists()


def test_train_a_spectrum_network_from_scratch_and_align_with_it(particle_star, tmp_path):
    model = tmp_path / "m.pt"
    assert main(["train", "--data", str(particle_star), "--out", str(model), "--steps", "3",
                 "--batch-size", "4", "--val-every", "3", "--input", "spectrum", "--init",
                 "none", "--quiet"]) == 0
    state = torch.load(model, weights_only=True)
    assert state["net"]["input"] == "spectrum" and state["train"]["init"] == ""
    out = tmp_path / "aligned"
    assert main(["align", "--stack", str(particle_star), "--reference",
                 str(tmp_path / "parts_reference.mrc"), "--out-dir", str(out), "--model",
                 str(model), "--max-shift", "3", "--quiet"]) == 0
    assert (out / "particles.star").exists()


def test_group_by_needs_the_column(particle_star, tmp_path, capsys):
    code = main(["train", "--data", str(particle_star), "--out", str(tmp_path / "m.pt"),
                 "--steps", "1", "--group-by", "rlnClassNumber", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no column 'rlnClassNumber'" in err[0]
    assert not (tmp_path / "m.pt").exists()


def test_split_views_share_content_but_not_noise():
    from udl_align.training.loop import split_noise

    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.standard_normal((4, 64, 64)).astype(np.float32))
    smooth = torch.from_numpy(np.stack([particle(64)] * 4).astype(np.float32))
    for x, low, high in ((noise, -0.1, 0.1), (smooth, 0.95, 1.0)):
        even, odd = split_noise(x)
        assert even.shape == (4, 32, 32)
        r = np.corrcoef(even.flatten().numpy(), odd.flatten().numpy())[0, 1]
        assert low <= r <= high, r


def test_reference_pairs_take_the_reference_onto_each_particle(particle_star):
    from udl_align.data.particles import read_reference
    from udl_align.data.stack_pairs import StackPairSource
    from udl_align.data.stacks import open_particles

    particles = open_particles(particle_star)
    reference = read_reference(particle_star.with_name("parts_reference.mrc"), particles.size)
    source = StackPairSource(particles, seed=2, reference=reference)
    batch = source.sample(5)
    assert np.allclose(batch.a, reference[None])
    mask = g.soft_circular_mask(48, 18)
    for b, t in zip(batch.b, np.stack([batch.angle, batch.tx, batch.ty], 1), strict=True):
        r = np.corrcoef((g.apply(reference, t) * mask).ravel(), (b * mask).ravel())[0, 1]
        assert r > 0.9, r
    views, truth = source.sample_views(3, 3)
    assert np.allclose(views[:, 0], reference[None]) and np.allclose(truth[:, 0], 0.0)
    source.close()
