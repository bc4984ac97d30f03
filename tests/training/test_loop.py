from pathlib import Path

import numpy as np
import pytest
import torch

from udl_align import geometry as g
from udl_align.aligners import BruteForce
from udl_align.network.checkpoint import load_checkpoint
from udl_align.network.inputs import prepare_input
from udl_align.network.losses import circular_distance, range_penalty, supervised_loss, udl_loss
from udl_align.network.models import AlignNet, preset
from udl_align.training.config import TrainConfig
from udl_align.training.loop import train, udl_batch


def test_circular_loss_is_periodic_and_zero_at_the_truth():
    x = torch.tensor([10.0, 359.0, 180.0, -90.0])
    assert torch.allclose(circular_distance(x, x), torch.zeros(4))
    assert torch.allclose(circular_distance(x + 360.0, x), torch.zeros(4), atol=1e-4)
    assert torch.allclose(circular_distance(x - 720.0, x), torch.zeros(4), atol=1e-4)
    assert circular_distance(torch.tensor(359.0), torch.tensor(1.0)) == pytest.approx(2.0)
    assert circular_distance(torch.tensor(0.0), torch.tensor(180.0)) == pytest.approx(180.0)


def test_range_penalty_is_zero_inside_and_grows_outside():
    inside = torch.tensor([0.0, 0.5, 180.0, 359.9, 360.0])
    assert torch.all(range_penalty(inside) == 0)
    assert range_penalty(torch.tensor(-5.0)) == pytest.approx(5.0)
    assert range_penalty(torch.tensor(370.0)) == pytest.approx(10.0)


def test_udl_loss_is_zero_when_output_differences_match():
    theta = torch.tensor([30.0, 200.0, 359.0])
    c = 77.0  # any constant offset is invisible to the loss
    target = torch.tensor([10.0, -100.0, 250.0])
    out_a = torch.remainder(theta + c, 360.0)[:, None]
    out_b = torch.remainder(theta + c - target, 360.0)[:, None]
    assert udl_loss(out_a, out_b, target, "scalar").item() == pytest.approx(0.0, abs=1e-4)
    vec = lambda d: torch.stack([torch.cos(torch.deg2rad(d)), torch.sin(torch.deg2rad(d))], 1)  # noqa: E731
    assert udl_loss(vec(theta + c), vec(theta + c - target), target, "vector").item() == \
        pytest.approx(0.0, abs=1e-3)
    assert supervised_loss(vec(theta), theta, "vector").item() == pytest.approx(0.0, abs=1e-3)


def test_udl_pseudo_label_matches_the_true_angle_difference(photo):
    """The target of F(A) - F(B) built by udl_batch equals what exhaustive search measures."""
    from conftest import cut_pair

    a, b = cut_pair(photo, 260, 250, (40.0, 3.0, -2.0))
    ta, tb = torch.from_numpy(a)[None], torch.from_numpy(b)[None]
    gen = torch.Generator().manual_seed(0)
    (a1, b1), (a2, b2), target = udl_batch(ta, tb, 5.0, gen)
    bf = BruteForce(max_shift=20)
    theta_a = bf.estimate(a1.numpy(), b1.numpy()).angle[0]
    theta_b = bf.estimate(a2.numpy(), b2.numpy()).angle[0]
    assert g.angle_error(theta_a - theta_b, target.item()) < 1.0


def test_prepare_input_resamples_standardises_and_masks():
    x = torch.rand(3, 128, 128) * 5 + 2
    out = prepare_input(x, 64)
    assert out.shape == (3, 64, 64)
    assert out[:, 0, 0].abs().max() == 0  # corners masked
    centre = out[:, 24:40, 24:40]
    assert centre.std() == pytest.approx(1.0, rel=0.3)


def test_mask_module_stride_and_old_checkpoints():
    from udl_align.network.models import NetConfig

    net = AlignNet(preset("cpu", mask_stride=2))
    x = torch.randn(3, 1, 64, 64)
    assert net.mask(x).shape == x.shape
    assert NetConfig.from_dict({"size": 64}).mask_stride == 1  # a config without the field


def test_one_image_against_several_is_embedded_once():
    from udl_align.network.predict import predict_against_each

    torch.manual_seed(1)
    net = AlignNet(preset("cpu")).eval()
    a = torch.randn(5, 64, 64)
    bs = [torch.randn(5, 64, 64) for _ in range(3)]
    calls = []
    net.embed = lambda x, embed=net.embed: calls.append(len(x)) or embed(x)
    each = predict_against_each(net, a, bs, batch=2)  # batches of 2, 2 and 1
    # per batch of a: one call with a (once) and the same rows of each of the three
    assert calls == [2 * 4, 2 * 4, 1 * 4]
    with torch.no_grad():
        for b, out in zip(bs, each, strict=True):
            assert torch.allclose(out, net(a, b), atol=1e-5)  # as embedding both each time


def test_folding_batchnorm_keeps_the_outputs():
    from udl_align.network.models import fused_for_inference

    torch.manual_seed(0)
    net = AlignNet(preset("cpu"))
    net.train()
    for _ in range(3):  # move the running statistics away from their initial values
        net(torch.randn(8, 64, 64), torch.randn(8, 64, 64))
    net.eval()
    x, y = torch.randn(4, 64, 64), torch.randn(4, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x, y), fused_for_inference(net)(x, y), atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # not in place


def test_the_inference_network_in_channels_last_keeps_the_outputs():
    """The aligner's network (batch norms folded, one-channel 1x1 convolutions as scales,
    channels-last layout, a residual stage) gives the trained network's outputs."""
    from udl_align.network.models import FromOneChannel, fused_for_inference, to_device

    torch.manual_seed(0)
    cfg = preset("cpu", residual=(8, 8), residual_offset=30.0, residual_steps=2)
    net = AlignNet(cfg)
    torch.nn.init.normal_(net.residual.out.weight, std=0.05)  # a stage that turns
    net.train()
    for _ in range(2):
        net(torch.randn(8, 64, 64), torch.randn(8, 64, 64))
    net.eval()
    fast = to_device(fused_for_inference(net), torch.device("cpu"))
    assert any(isinstance(m, FromOneChannel) for m in fast.modules())
    x, y = torch.randn(5, 64, 64), torch.randn(5, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x, y), fast(x, y), atol=1e-4)


def test_one_channel_shortcuts_give_what_the_torch_layers_give():
    from torch.nn import functional as F

    from udl_align.network.models import FromOneChannel, MaxPool2, upsample_one_channel

    torch.manual_seed(2)
    x = torch.randn(3, 1, 10, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(MaxPool2()(x), F.max_pool2d(x, 2))
        conv = torch.nn.Conv2d(1, 6, 1)
        out = FromOneChannel(conv)(x)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(out, conv(x), atol=1e-6)
        assert torch.equal(upsample_one_channel(x, (20, 24)),
                           F.interpolate(x, size=(20, 24), mode="bilinear",
                                         align_corners=False))
    many = torch.randn(2, 3, 8, 8, requires_grad=True)  # more channels, or gradients: torch's
    assert torch.equal(MaxPool2()(many), F.max_pool2d(many, 2))


def test_presets_build_and_run():
    for name in ("cpu", "paper"):
        cfg = preset(name)
        net = AlignNet(cfg)
        x = torch.randn(2, cfg.size, cfg.size)
        out = net(x, x)
        assert out.shape == (2, 1 if cfg.head == "scalar" else 2)


def tiny_config(photo_dir, steps):
    return TrainConfig(images=str(photo_dir), steps=steps, batch_size=4, val_pairs=8,
                       val_every=2, calib_groups=8, noise="gaussian:0.5",
                       net={"size": 32, "channels": [8, 8, 16, 16], "fc": [32, 32],
                            "match_channels": [8, 8], "mask_channels": [4]})


def test_resume_ends_where_an_uninterrupted_run_ends(photo_dir, tmp_path):
    straight = train(tiny_config(photo_dir, 4), tmp_path / "a.pt", progress=False)
    train(tiny_config(photo_dir, 2), tmp_path / "b.pt", progress=False)
    resumed = train(tiny_config(photo_dir, 4), tmp_path / "b.pt", resume=True, progress=False)
    assert resumed["step"] == straight["step"] == 4
    for k, v in straight["model"].items():
        assert torch.allclose(v.float(), resumed["model"][k].float(), atol=1e-5), k
    state = load_checkpoint(tmp_path / "b.pt")
    assert state["net"]["size"] == 32 and state["offset"] is not None
    assert state["train"]["objective"] == "udl" and len(state["history"]) == 2
    # an exported (inference-only) model aligns but refuses to resume
    from udl_align.aligners.network import NetworkAligner
    from udl_align.errors import InputError
    from udl_align.network.checkpoint import export_for_inference, save_checkpoint

    save_checkpoint(tmp_path / "x.pt", export_for_inference(state))
    assert NetworkAligner.from_checkpoint(tmp_path / "x.pt").offset == state["offset"]
    with pytest.raises(InputError, match="cannot be resumed"):
        train(tiny_config(photo_dir, 5), tmp_path / "x.pt", resume=True, progress=False)


def test_pair_making_workers_are_seeded(photo_dir, tmp_path):
    """``workers`` processes make the pairs: the same run twice gives the same weights, and
    the run still resumes (its workers drawing new pairs)."""
    runs = [train(TrainConfig(**{**tiny_config(photo_dir, 3).to_dict(), "workers": 2}),
                  tmp_path / f"w{i}.pt", progress=False) for i in range(2)]
    for k, v in runs[0]["model"].items():
        assert torch.equal(v, runs[1]["model"][k]), k
    assert runs[0]["train"]["workers"] == 2
    resumed = train(TrainConfig(**{**tiny_config(photo_dir, 5).to_dict(), "workers": 1}),
                    tmp_path / "w0.pt", resume=True, progress=False)
    assert resumed["step"] == 5 and resumed["train"]["workers"] == 1


def test_symmetry_multiplies_the_head_angle():
    """A C_n network's head angle is n times the rotation: a direct head gives that itself, a
    power head (checkpoints from before the option) its raw angle times n, a 2-vector keeping
    its length (its confidence); the config refuses nonsense."""
    from udl_align.network.losses import angle_of
    from udl_align.network.models import NetConfig, multiply_angle

    raw = torch.tensor([[0.6, 0.8], [-2.0, 0.5], [0.1, -0.3]])
    for n in (1, 2, 3):
        out = multiply_angle(raw, n, "vector")
        assert torch.allclose(out.norm(dim=1), raw.norm(dim=1), atol=1e-6)
        want = n * angle_of(raw, "vector")
        assert g.angle_error(angle_of(out, "vector").numpy(), want.numpy()).max() < 1e-3
    assert torch.equal(multiply_angle(raw[:, :1], 3, "scalar"), 3 * raw[:, :1])
    torch.manual_seed(0)
    x, y = torch.randn(2, 64, 64), torch.randn(2, 64, 64)
    plain = AlignNet(preset("cpu"))
    power = AlignNet(preset("cpu", symmetry=2, symmetric_head="power"))
    direct = AlignNet(preset("cpu", symmetry=2))
    for double in (power, direct):  # the same weights fit any symmetry
        double.load_state_dict(plain.state_dict())
    plain.eval(), power.eval(), direct.eval()
    assert torch.allclose(power(x, y), multiply_angle(plain(x, y), 2, "vector"), atol=1e-5)
    assert torch.allclose(direct(x, y), plain(x, y), atol=1e-5)
    assert direct.cfg.symmetric_head == "direct" and direct.cfg.angle_factor == 2
    # a checkpoint's config from before the option: its head was a power head
    assert NetConfig.from_dict({"symmetry": 2}).symmetric_head == "power"
    assert NetConfig.from_dict({"input": "spectrum", "symmetry": 3}).angle_factor == 6
    for bad in ({"symmetry": 0}, {"symmetry": 2, "head": "rigid"}):
        with pytest.raises(ValueError, match="symmetry"):
            NetConfig.from_dict(bad)
    with pytest.raises(ValueError, match="symmetric head"):
        NetConfig.from_dict({"symmetric_head": "square"})


def test_a_symmetric_run_from_a_model_gets_a_direct_head(tmp_path):
    """Fine-tuning the shipped full-circle model (or any checkpoint, old ones included) into
    a C_2 network gives it today's direct head, unless the run says otherwise."""
    from udl_align.network.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from udl_align.network.models import NetConfig
    from udl_align.training.loop import initial_weights

    for init in ("default", tmp_path / "old.pt"):
        if init != "default":
            net = {k: v for k, v in preset("cpu").to_dict().items() if k != "symmetric_head"}
            save_checkpoint(init, {"format": CHECKPOINT_FORMAT, "net": net,
                                   "model": AlignNet(preset("cpu")).state_dict()})
        cfg, weights = initial_weights(TrainConfig(init=str(init), net={"symmetry": 2}),
                                       preset("cpu"))
        assert cfg.symmetry == 2 and cfg.symmetric_head == "direct" and weights is not None
    cfg, _ = initial_weights(TrainConfig(init="default", net={"symmetric_head": "power"}),
                             preset("cpu"))
    assert cfg.symmetric_head == "power"
    assert NetConfig().symmetric_head == "direct"


def test_train_align_evaluate_from_the_command_line(photo_dir, tmp_path, capsys):
    from udl_align.cli import main

    model = tmp_path / "m.pt"
    pairs = tmp_path / "p.npz"
    assert main(["train", "--data", str(photo_dir), "--out", str(model), "--steps", "2",
                 "--batch-size", "4", "--quiet"]) == 0
    assert main(["synth", "natural", "--images", str(photo_dir), "--out", str(pairs), "--n", "4",
                 "--quiet"]) == 0
    for extra in ([], ["--refine"]):
        est = tmp_path / f"e{len(extra)}.csv"
        assert main(["align", "--pairs", str(pairs), "--model", str(model), "--out", str(est),
                     "--quiet", *extra]) == 0
        assert main(["evaluate", "--pairs", str(pairs), "--estimates", str(est)]) == 0
    assert main(["train", "--data", str(photo_dir), "--out", str(model), "--steps", "3",
                 "--batch-size", "4", "--quiet", "--resume", "--calibrate-with", str(pairs)]) == 0
    state = load_checkpoint(model)
    assert state["step"] == 3 and state["offset_info"]["method"].startswith("labelled")
    out = capsys.readouterr().out
    assert "offset C" in out and "network+refine" in out


def test_bad_model_files_give_one_line(tmp_path, capsys):
    from udl_align.cli import main

    pairs = tmp_path / "p.npz"
    np.savez(pairs, a=np.zeros((1, 32, 32), np.float32), b=np.zeros((1, 32, 32), np.float32))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    # a checkpoint whose weights belong to another input size than its config says
    from udl_align.network.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    other = tmp_path / "other.pt"
    save_checkpoint(other, {"format": CHECKPOINT_FORMAT, "net": preset("cpu").to_dict(),
                            "model": AlignNet(preset("cpu", size=128)).state_dict(),
                            "offset": 0.0})
    for model, phrase in ((junk, "not a readable udl-align checkpoint"),
                          (tmp_path / "none.pt", "no such file"),
                          (other, "do not fit its network config")):
        assert main(["align", "--pairs", str(pairs), "--model", str(model), "--out",
                     str(tmp_path / "e.csv")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and phrase in err[0]
    assert not (tmp_path / "e.csv").exists()
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "m.pt"),
                 "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no PNG/JPEG/TIFF" in err[0] and not (tmp_path / "m.pt").exists()
    assert main(["align", "--pairs", str(pairs), "--method", "emaf", "--refine", "--out",
                 str(tmp_path / "e.csv")]) == 2
    assert "use it with --model" in capsys.readouterr().err


def test_config_for_data_applies_the_data_defaults():
    """Fields not given take the data's defaults (particles: PARTICLE_DEFAULTS), then the
    field defaults; the command line builds its config the same way."""
    from udl_align.cli import build_parser
    from udl_align.cli.train import config
    from udl_align.training.config import PARTICLE_DEFAULTS, field_default

    photos = TrainConfig.for_data("photos")
    assert photos == TrainConfig(images="photos", net={"input_lowpass": 0.0, "input": "image",
                                                       "test_turns": 1})
    parts = TrainConfig.for_data("p.star")
    assert parts.init == PARTICLE_DEFAULTS["init"] and parts.split_views
    assert parts.objective == "search" and parts.turn_augment
    assert parts.lr_schedule == "cosine" and photos.lr_schedule == "step"
    assert TrainConfig.for_data("p.star", objective="udl").init == PARTICLE_DEFAULTS["init"]
    assert parts.disturb_shift == 0.0  # the shipped model's input kind is kept:
    assert parts.net == {"input_lowpass": 0.25, "test_turns": 4}
    assert (parts.augment_noise, parts.augment_shift, parts.ema) == (0.5, 4.0, 0.999)
    assert (photos.augment_noise, photos.augment_shift, photos.ema) == (0.0, 0.0, 0.0)
    assert parts.steps == field_default("steps") and parts.lr == field_default("lr")
    # a given model keeps its input kind; no shipped model for other objectives or on resume
    tuned = TrainConfig.for_data("p.star", init="m.pt", net={"symmetry": 2})
    assert tuned.init == "m.pt" and tuned.net == {"input_lowpass": 0.25, "symmetry": 2,
                                                  "test_turns": 4}
    stn = TrainConfig.for_data("p.star", objective="stn")
    assert stn.init == "" and stn.net == {"input_lowpass": 0.25, "input": "image",
                                          "test_turns": 4}
    again = TrainConfig.for_data("p.star", resume=True, init="none")
    assert again.init == "" and again.steps is None  # None: keep the saved budget
    assert TrainConfig.for_data("p.star", resume=True, steps=5).steps == 5

    def cli(*flags):
        return config(build_parser().parse_args(["train", "--out", "m.pt", *flags]))

    assert cli("--data", "photos") == photos and cli("--data", "p.star") == parts
    assert cli("--data", "p.star", "--split-views", "off", "--input-lowpass", "0.1",
               "--checkpoint-every", "7", "--lr", "0.01", "--symmetry", "1",
               "--turn-augment", "off", "--search-particles", "500",
               "--lr-schedule", "step", "--augment-noise", "0", "--augment-shift", "2",
               "--ema", "0", "--test-turns", "1") == \
        TrainConfig.for_data("p.star", split_views=False, checkpoint_steps=7, lr=0.01,
                             turn_augment=False, search_particles=500, lr_schedule="step",
                             augment_noise=0.0, augment_shift=2.0, ema=0.0,
                             net={"input_lowpass": 0.1, "symmetry": 1, "test_turns": 1})


def test_a_near_two_fold_reference_makes_the_search_objective_learn_modulo_180(tmp_path):
    """The search objective's symmetry follows the reference when none is given: 2 for a
    view that looks the same turned by 180 deg, 1 otherwise; a given one is kept."""
    from conftest import blob_average
    from udl_align.aligners.correlation import half_turn_match
    from udl_align.io.mrc import write_mrc
    from udl_align.training.config import NEAR_TWOFOLD, with_reference_symmetry

    blob = blob_average()
    yy, xx = g.centred_grid(blob.shape[-1])
    blob = blob + 0.5 * blob.max() * np.exp(-((xx - 12) ** 2 + (yy - 6) ** 2) / 18.0)  # a knob
    twofold = blob + g.apply(blob, (180.0, 0.0, 0.0))
    # the match is found wherever the two-fold axis lies and however the view is turned
    off_axis = g.apply(twofold, (3.0, 2.0, -1.0))
    assert half_turn_match(twofold) > 0.99 and half_turn_match(off_axis) > 0.95
    assert half_turn_match(blob) < NEAR_TWOFOLD
    for image, name, expected in ((blob, "blob.mrc", 1), (twofold, "twofold.mrc", 2)):
        write_mrc(tmp_path / name, image.astype(np.float32), stack=False)
        cfg, similarity = with_reference_symmetry(
            TrainConfig.for_data("p.star", reference=str(tmp_path / name)))
        assert cfg.net["symmetry"] == expected and similarity is not None
    given = TrainConfig.for_data("p.star", reference=str(tmp_path / "twofold.mrc"),
                                 net={"symmetry": 1})
    assert with_reference_symmetry(given) == (given, None)
    udl = TrainConfig.for_data("p.star", reference=str(tmp_path / "twofold.mrc"),
                               objective="udl")
    assert with_reference_symmetry(udl) == (udl, None)


def test_learning_rate_schedules():
    """The step schedule is the paper's (x gamma every lr_step steps); the cosine one falls
    from lr to LR_FLOOR x lr over the budget, steadily."""
    from udl_align.training.config import LR_FLOOR
    from udl_align.training.loop import learning_rate

    paper = TrainConfig(lr=1e-3, lr_step=10, lr_gamma=0.5)
    assert [learning_rate(paper, s, 0.0) for s in (0, 9, 10, 25)] == [1e-3, 1e-3, 5e-4, 2.5e-4]
    cosine = TrainConfig(lr=1e-3, lr_schedule="cosine", lr_hold=0.0)
    rates = [learning_rate(cosine, 0, d) for d in np.linspace(0, 1, 11)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(LR_FLOOR * 1e-3)
    assert rates[5] == pytest.approx((1 + LR_FLOOR) / 2 * 1e-3)
    assert all(np.diff(rates) < 0)
    held = TrainConfig(lr=1e-3, lr_schedule="cosine", lr_hold=0.8)
    assert learning_rate(held, 0, 0.8) == 1e-3
    assert learning_rate(held, 0, 0.9) == pytest.approx((1 + LR_FLOOR) / 2 * 1e-3)
    assert learning_rate(held, 0, 1.0) == pytest.approx(LR_FLOOR * 1e-3)


def test_a_cosine_run_of_steps_ends_at_the_floor(tmp_path):
    from toy import toy_config, toy_sources
    from udl_align.training.config import LR_FLOOR

    torch.set_num_threads(2)
    cfg = TrainConfig.from_dict({**toy_config(20).to_dict(), "lr_schedule": "cosine",
                                 "lr_hold": 0.5})
    state = train(cfg, tmp_path / "c.pt", progress=False, log=lambda *_: None,
                  make_source=toy_sources())
    last = state["optimizer"]["param_groups"][0]["lr"]  # the last step's: 19 / 20 done
    assert last == pytest.approx(cfg.lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (
        1 + np.cos(np.pi * 0.9))))


def test_two_toy_runs_from_one_seed_give_the_same_weights(tmp_path):
    from toy import toy_config, toy_sources

    torch.set_num_threads(2)
    runs = [train(toy_config(40), tmp_path / f"t{i}.pt", progress=False, log=lambda *_: None,
                  make_source=toy_sources()) for i in range(2)]
    assert runs[0]["step"] == 40
    for k, v in runs[0]["model"].items():
        assert torch.equal(v, runs[1]["model"][k]), k
    assert runs[0]["offset"] == runs[1]["offset"]
    assert runs[0]["history"][-1]["loss"] == runs[1]["history"][-1]["loss"]


def test_calibrate_with_writes_the_labelled_offset_once(photo_dir, tmp_path, monkeypatch,
                                                         capsys):
    import udl_align.training.loop as loop
    from udl_align.cli import main
    from udl_align.io.pairs import read_pairs
    from udl_align.network.calibration import offset_labelled
    from udl_align.network.checkpoint import model_from_checkpoint

    pairs, model = tmp_path / "p.npz", tmp_path / "m.pt"
    assert main(["synth", "natural", "--images", str(photo_dir), "--out", str(pairs), "--n", "8",
                 "--size", "64", "--quiet"]) == 0
    written = []
    save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint",
                        lambda path, state: (written.append(state["offset"]), save(path, state)))
    capsys.readouterr()
    assert main(["train", "--data", str(photo_dir), "--out", str(model), "--steps", "2",
                 "--batch-size", "4", "--quiet", "--calibrate-with", str(pairs)]) == 0
    state = load_checkpoint(model)
    truth = read_pairs(pairs)
    labelled = offset_labelled(model_from_checkpoint(state), truth.a, truth.b, truth.angle)
    assert written == [state["offset"]] and state["offset"] == pytest.approx(labelled["offset"])
    info = state["offset_info"]
    assert info["method"] == f"labelled ({pairs})" and info["n"] == 8
    assert info["label_free"]["method"].startswith("label-free")
    assert f"offset C = {state['offset']:.2f} deg (labelled" in capsys.readouterr().out
    # pairs without truth are refused before any training
    np.savez(tmp_path / "u.npz", a=truth.a, b=truth.b)
    assert main(["train", "--data", str(photo_dir), "--out", str(tmp_path / "n.pt"), "--steps",
                 "2", "--quiet", "--calibrate-with", str(tmp_path / "u.npz")]) == 2
    err = capsys.readouterr().err
    assert "has no truth to calibrate with" in err and not (tmp_path / "n.pt").exists()


def test_resume_without_steps_keeps_the_saved_budget(photo_dir, tmp_path):
    train(tiny_config(photo_dir, 2), tmp_path / "c.pt", progress=False)
    cfg = tiny_config(photo_dir, 3)
    cfg.steps = None  # what `udl-align train --resume` passes when --steps is not given
    state = train(cfg, tmp_path / "c.pt", resume=True, progress=False)
    assert state["step"] == 2  # the saved budget (2) is kept, not a default of 1000


# --------------------------------------------------------------------------------------------
# Learning on a toy family (about 20 s each on 2 cores): UDL learns angles without labels, does
# not learn from pure noise, and its label-free offset C matches the labelled one.
# --------------------------------------------------------------------------------------------

def toy_train(tmp_path, signal: bool):
    from toy import ToySource, toy_config, toy_sources

    torch.set_num_threads(2)
    state = train(toy_config(), tmp_path / "toy.pt", progress=False, log=lambda *_: None,
                  make_source=toy_sources(signal))
    state["out"] = str(tmp_path / "toy.pt")
    return state, ToySource(size=32, seed=99, signal=signal, patterns=1)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    return toy_train(tmp_path_factory.mktemp("toy"), signal=True)


def test_udl_learns_rotation_without_labels(toy_model):
    from udl_align.network.checkpoint import model_from_checkpoint
    from udl_align.network.predict import predict_angles

    state, source = toy_model
    model = model_from_checkpoint(state)
    test = source.sample(200)
    raw = predict_angles(model, prepare_input(torch.from_numpy(test.a), 32),
                         prepare_input(torch.from_numpy(test.b), 32)).numpy()
    # the label-free offset C stored by train(), no labels used anywhere
    err = g.angle_error(raw - state["offset"], test.angle)
    assert np.mean(err) < 30.0 and np.median(err) < 15.0  # chance: 90 mean, 90 median


def test_label_free_offset_agrees_with_labelled(toy_model):
    from udl_align.network.calibration import offset_labelled
    from udl_align.network.checkpoint import model_from_checkpoint

    state, source = toy_model
    test = source.sample(200)
    labelled = offset_labelled(model_from_checkpoint(state), test.a, test.b, test.angle)
    # the toy network's own errors have a median of 10-12 deg, which bounds how well any C
    # fits it: the label-free C was 4.5-6.6 deg from the labelled one over four draws of 200
    # pairs with torch 2.14 (chance: 90)
    assert g.angle_error(state["offset"], labelled["offset"]) < 8.0
    assert state["offset_info"]["cycles_within_15deg"] > 0.5  # chance: about 0.08
    assert state["offset_info"]["output_resultant"] < 0.3  # collapsed: near 1


def test_the_trust_check_and_the_log_of_a_network_that_learned(toy_model, tmp_path):
    """The label-free trust check: a network that learned agrees with the exhaustive search
    on most unlabelled pairs; the run's CSV and PNG log sit beside its checkpoint."""
    import csv

    from udl_align.aligners.network import untrusted
    from udl_align.training.log import history_paths

    state, _ = toy_model
    trust = state["trust"]
    assert trust["pairs"] == 64 and trust["agreement"] > 0.6 and trust["chance"] < 0.1
    assert untrusted(state["offset_info"], trust) == "" and trust["turn_agreement"] is None
    assert trust["half_turn_share"] < 0.05  # an asymmetric pattern's turns do not confuse it
    assert state["history"][-1]["search_agreement"] == trust["agreement"]
    csv_path, png_path = history_paths(Path(state["out"]))
    rows = list(csv.DictReader(open(csv_path)))
    assert [int(r["step"]) for r in rows] == [e["step"] for e in state["history"]]
    assert float(rows[-1]["search_agreement"]) == pytest.approx(trust["agreement"])
    assert png_path.stat().st_size > 1000


def test_the_trust_check_of_a_network_that_knows_the_angle_modulo_180(toy_model):
    """Read as C_2, the same network is judged modulo 180, and the turn picked by correlation
    is judged on the full circle as well (asymmetric pairs: both agree)."""
    from udl_align.aligners.network import MIN_AGREEMENT, NetworkAligner, search_agreement
    from udl_align.network.checkpoint import model_from_checkpoint

    state, source = toy_model
    # the full-circle head read as C_2: its angle doubled, a power head
    model = model_from_checkpoint({**state, "net": {**state["net"], "symmetry": 2,
                                                    "symmetric_head": "power"}})
    pairs = source.sample(64)
    trust = search_agreement(NetworkAligner(model, offset=2 * state["offset"]), pairs.a,
                             pairs.b)
    # trusted (MIN_AGREEMENT) when read as C_2: 0.59-0.78 on draws of 32 pairs
    assert trust["period_deg"] == 180.0 and trust["agreement"] > MIN_AGREEMENT
    assert 0.5 < trust["turn_agreement"] <= trust["agreement"]
    assert trust["half_turn_share"] is None


def test_udl_does_not_learn_from_pure_noise(tmp_path):
    """The leak test: views with no shared signal leave nothing to learn, so any drop of the
    loss towards zero would come from a shortcut (resampling, masks, shared noise)."""
    state, _ = toy_train(tmp_path, signal=False)
    assert state["history"][-1]["loss"] > 70.0  # a circular distance to random targets: ~90
    # and its own label-free checks say so: the calibration (outputs at random: few 3-cycles
    # close; or collapsed onto one angle: all close, trivially), and the trust check (its
    # angles agree with the exhaustive search's at chance)
    from udl_align.aligners.network import distrusted_by_search, untrusted

    assert untrusted(state["offset_info"]), state["offset_info"]
    assert distrusted_by_search(state["trust"]), state["trust"]


def test_train_from_a_pairs_file_and_fine_tune(photo_dir, tmp_path, capsys):
    from udl_align.cli import main

    pairs, unlabelled = tmp_path / "p.npz", tmp_path / "u.npz"
    assert main(["synth", "natural", "--images", str(photo_dir), "--out", str(pairs), "--n",
                 "24", "--size", "64", "--quiet"]) == 0
    with np.load(pairs) as f:
        np.savez(unlabelled, a=f["a"], b=f["b"])
    first, tuned = tmp_path / "m.pt", tmp_path / "t.pt"
    common = ["--steps", "2", "--batch-size", "4", "--val-every", "1", "--quiet"]
    assert main(["train", "--data", str(unlabelled), "--out", str(first), *common]) == 0
    state = load_checkpoint(first)
    assert state["step"] == 2 and "val_mean_deg" not in state["history"][-1]
    assert main(["train", "--data", str(pairs), "--out", str(tuned), "--init", str(first),
                 "--preset", "paper", *common]) == 0
    fine = load_checkpoint(tuned)
    assert fine["net"] == state["net"] and fine["train"]["init"] == str(first)  # not "paper"
    assert "val_mean_deg" in fine["history"][-1]
    capsys.readouterr()
    assert main(["train", "--data", str(unlabelled), "--out", str(tmp_path / "s.pt"),
                 "--objective", "supervised", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no true angles" in err[0] and not (tmp_path / "s.pt").exists()


def test_a_killed_training_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path):
    """SIGKILL a real ``udl-align train`` process mid-run, ``--resume`` it, and compare its
    final weights with a run that was never interrupted (same seed, same budget)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "pairs.npz", a=a, b=np.roll(a, 1, axis=0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # same threads, same arithmetic

    def command(out, *extra):
        return [sys.executable, "-m", "udl_align", "train", "--data", str(tmp_path / "pairs.npz"),
                "--out", str(out), "--batch-size", "4", "--checkpoint-every", "2",
                "--val-every", "4", "--seed", "3", "--quiet", *extra]

    subprocess.run(command(tmp_path / "straight.pt", "--steps", "30"), env=env, check=True,
                   capture_output=True)
    killed = tmp_path / "killed.pt"
    proc = subprocess.Popen(command(killed, "--steps", "30"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if killed.exists() and load_checkpoint(killed)["step"] >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(killed)["step"] < 30
    subprocess.run(command(killed, "--resume"), env=env, check=True, capture_output=True)
    straight, resumed = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(killed)
    assert resumed["step"] == straight["step"] == 30
    for k, v in straight["model"].items():
        assert torch.allclose(v.float(), resumed["model"][k].float(), atol=1e-5), k
    assert resumed["offset"] == pytest.approx(straight["offset"], abs=1e-3)


def toy_error(state, source) -> float:
    from udl_align.network.checkpoint import model_from_checkpoint
    from udl_align.network.predict import predict_angles

    model = model_from_checkpoint(state)
    test = source.sample(200)
    raw = predict_angles(model, prepare_input(torch.from_numpy(test.a), 32),
                         prepare_input(torch.from_numpy(test.b), 32)).numpy()
    return float(np.mean(g.angle_error(raw - state["offset"], test.angle)))


def test_two_processes_under_torchrun_train_like_one(toy_model, tmp_path):
    """The toy run again, as 2 gloo processes started by torchrun (each with half of every
    batch): it learns as well as the one-process run of the same total batch."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "ddp_toy.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(script.parent), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", "2", str(script), str(tmp_path / "ddp.pt")],
                   env=env, check=True, capture_output=True, timeout=300)
    state, source = toy_model
    two = load_checkpoint(tmp_path / "ddp.pt")
    from toy import TOY_STEPS

    assert two["step"] == state["step"] == TOY_STEPS
    one_err, two_err = toy_error(state, source), toy_error(two, source)
    assert two_err < 30.0, two_err  # chance: 90
    assert abs(one_err - two_err) < 10.0, (one_err, two_err)


def test_the_stn_baseline_trains(photo_dir, tmp_path):
    """The STN learns a transform through the warp: the grid must carry gradients."""
    cfg = TrainConfig.from_dict({**tiny_config(photo_dir, 3).to_dict(), "objective": "stn"})
    state = train(cfg, tmp_path / "stn.pt", progress=False)
    assert state["step"] == 3 and np.isfinite(state["history"][-1]["loss"])
