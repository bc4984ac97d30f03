"""The default particle recipe of ``udl-align train`` learns a small synthetic particle family
in well under a minute, and the label-free trust check tells it from a network trained on pure
noise; the run's log sits beside its checkpoint."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import blob_average
from udl_align import geometry as g
from udl_align.aligners.network import NetworkAligner, untrusted
from udl_align.cli import main
from udl_align.data.particles import read_reference
from udl_align.data.stacks import open_particles
from udl_align.io.mrc import write_mrc
from udl_align.network.checkpoint import load_checkpoint


def average() -> np.ndarray:
    """A clearly asymmetric class average: the blob with a knob (its half turn matches it at
    0.60, below the 0.76 that makes the search objective learn modulo 180)."""
    blob = blob_average()
    yy, xx = g.centred_grid(blob.shape[-1])
    return blob + 0.5 * blob.max() * np.exp(-((xx - 12) ** 2 + (yy - 6) ** 2) / 18.0)


def synthesise(tmp_path, name: str, n: int, snr: float, seed: int):
    png = tmp_path / "average.png"
    if not png.exists():
        image = average()
        Image.fromarray((image / image.max() * 255).clip(0, 255).astype(np.uint8)).save(png)
    out = tmp_path / f"{name}.mrcs"
    assert main(["synth", "cryoem", "--template", str(png), "--out", str(out), "--n", str(n),
                 "--size", "64", "--snr", str(snr), "--max-shift", "4", "--seed", str(seed),
                 "--quiet"]) == 0
    return tmp_path / f"{name}.star", tmp_path / f"{name}_reference.mrc"


def train_default(star, reference, out, capsys, steps: int) -> dict:
    """The default recipe with a higher learning rate, so that a few hundred steps do."""
    torch.set_num_threads(2)
    assert main(["train", "--data", str(star), "--reference", str(reference), "--out", str(out),
                 "--steps", str(steps), "--batch-size", "16", "--lr", "1e-3", "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "trust check" in printed.out
    return load_checkpoint(out), printed


def held_out_error(model, star, reference) -> np.ndarray:
    particles = open_particles(star)
    with particles.reader() as read:
        b = read(np.arange(particles.n))
    ref = read_reference(reference, particles.size)
    est = NetworkAligner.from_checkpoint(model).estimate(np.repeat(ref[None], len(b), 0), b)
    return g.angle_error(est.angle, particles.transforms()[:, 0])


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("family")
    train_star, reference = synthesise(tmp, "train", 300, 1.0, 1)
    test_star, _ = synthesise(tmp, "test", 60, 1.0, 99)
    return tmp, train_star, test_star, reference


def test_the_default_particle_recipe_learns_and_is_trusted(family, capsys):
    tmp, train_star, test_star, reference = family
    state, printed = train_default(train_star, reference, tmp / "m.pt", capsys, 400)
    assert state["train"]["objective"] == "search" and state["train"]["turn_augment"]
    err = held_out_error(tmp / "m.pt", test_star, reference)
    assert np.median(err) < 25.0 and np.mean(err) < 40.0  # chance: 90 and 90
    assert state["trust"]["agreement"] > 0.5 and untrusted(state["offset_info"],
                                                           state["trust"]) == ""
    assert "warning" not in printed.err
    rows = list(csv.DictReader(open(tmp / "m_history.csv")))
    assert rows and rows[-1]["search_agreement"] and (tmp / "m_history.png").exists()


def test_the_trust_check_flags_a_network_trained_on_pure_noise(family, tmp_path, capsys):
    _, _, _, reference = family
    noise_star, _ = synthesise(tmp_path, "noise", 300, 1e-6, 2)  # no signal left
    state, printed = train_default(noise_star, reference, tmp_path / "noise.pt", capsys, 150)
    assert state["trust"]["agreement"] < 0.3
    assert "did not learn" in printed.err


def test_align_trains_on_the_stack_then_aligns_it_in_one_command(family, tmp_path, capsys):
    """``align --stack --train-minutes``: the transductive workflow (no reference given: one is
    made from the stack and kept beside the model)."""
    _, train_star, _, _ = family
    out = tmp_path / "out"
    torch.set_num_threads(2)
    assert main(["align", "--stack", str(train_star), "--out-dir", str(out),
                 "--train-minutes", "0.1", "--quiet"]) == 0
    for name in ("model.pt", "model_reference.mrc", "model_history.csv", "particles.star",
                 "aligned.mrcs", "average.mrc"):
        assert (out / name).exists(), name
    assert "network+refine" in capsys.readouterr().out


def test_a_resumed_search_run_reads_its_poses_from_the_cache(family, tmp_path, monkeypatch):
    """The exhaustive search runs once per run: its poses are kept beside the checkpoint and
    read back on --resume (and searched again for another reference)."""
    import udl_align.training.sources as sources

    _, train_star, _, reference = family
    calls = []
    search = sources.search_poses
    monkeypatch.setattr(sources, "search_poses", lambda *a, **k: calls.append(1) or search(*a, **k))
    torch.set_num_threads(2)
    out = tmp_path / "r.pt"
    flags = ["train", "--data", str(train_star), "--reference", str(reference), "--out",
             str(out), "--batch-size", "8", "--search-particles", "40", "--quiet"]
    assert main([*flags, "--steps", "2"]) == 0 and len(calls) == 1
    cache = tmp_path / "r_search_poses.npz"
    assert cache.exists()
    assert main([*flags, "--steps", "4", "--resume"]) == 0 and len(calls) == 1
    assert load_checkpoint(out)["step"] == 4
    other = tmp_path / "other.mrc"
    write_mrc(other, np.rot90(read_reference(reference, None)).copy(), stack=False)
    flags[flags.index(str(reference))] = str(other)
    assert main([*flags, "--steps", "2"]) == 0 and len(calls) == 2


def test_the_kept_weights_are_the_closest_to_the_search_and_survive_a_resume(family, tmp_path):
    """The default particle recipe keeps a moving average of the weights and, of the averages
    it measured against the exhaustive search on held-out particles (no labels), the closest:
    the checkpoint's model is those weights, its history holds the differences, and a run
    resumed half-way ends with the weights of one that never stopped."""
    _, train_star, _, reference = family
    torch.set_num_threads(2)

    def run(out, steps, *extra):
        assert main(["train", "--data", str(train_star), "--reference", str(reference),
                     "--out", str(out), "--batch-size", "8", "--search-particles", "40",
                     "--val-every", "2", "--steps", str(steps), "--quiet", *extra]) == 0
        return load_checkpoint(out)

    straight = run(tmp_path / "a.pt", 6)
    assert straight["train"]["ema"] > 0 and straight["net"]["test_turns"] == 4
    measured = {e["step"]: e["search_val_deg"] for e in straight["history"]
                if "search_val_deg" in e}
    assert sorted(measured) == [2, 4, 6]
    best = straight["best"]
    assert best["search_val_deg"] == min(measured.values()) and measured[best["step"]] == \
        best["search_val_deg"]
    for k, v in best["weights"].items():
        assert torch.equal(v, straight["model"][k]), k
    run(tmp_path / "b.pt", 3)
    resumed = run(tmp_path / "b.pt", 6, "--resume")
    assert resumed["step"] == 6 and resumed["best"]["step"] == best["step"]
    for k, v in straight["model"].items():
        assert torch.allclose(v.float(), resumed["model"][k].float(), atol=1e-5), k
