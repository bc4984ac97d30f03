"""The residual stage: it starts as the head alone, turns the second image's fine features back
by the head's angle, and trains alone when the rest is frozen."""

import numpy as np
import pytest
import torch

from conftest import cut_pair
from udl_align import geometry
from udl_align.network.checkpoint import DEFAULT_MODEL, load_checkpoint, model_from_checkpoint
from udl_align.network.inputs import model_input
from udl_align.network.losses import udl_loss
from udl_align.network.models import AlignNet, NetConfig, local_correlation, preset
from udl_align.training.config import TrainConfig
from udl_align.training.loop import train


def with_residual(cfg: NetConfig, **more) -> NetConfig:
    return NetConfig.from_dict({**cfg.to_dict(), "residual": (8, 8), **more})


def test_a_residual_stage_starts_as_the_head_alone():
    torch.manual_seed(0)
    plain = AlignNet(preset("cpu")).eval()
    full = AlignNet(with_residual(preset("cpu"), residual_offset=40.0))
    found = full.load_state_dict(plain.state_dict(), strict=False)
    assert found.unexpected_keys == [] and all(k.startswith("residual.")
                                               for k in found.missing_keys)
    full.eval()
    x, y = torch.randn(4, 64, 64), torch.randn(4, 64, 64)
    with torch.no_grad():
        assert torch.allclose(full(x, y), plain(x, y), atol=1e-6)


def test_local_correlation_at_zero_displacement_is_the_cosine_of_the_features():
    torch.manual_seed(1)
    fa, fb = torch.rand(2, 5, 6, 6), torch.rand(2, 5, 6, 6)
    corr = local_correlation(fa, fb, 1)
    assert corr.shape == (2, 9, 6, 6)
    cosine = torch.nn.functional.cosine_similarity(fa, fb, dim=1)
    assert torch.allclose(corr[:, 4], cosine, atol=1e-5)
    # displaced by one cell: fb moved so that its cell (y, x + 1) meets fa's (y, x)
    assert torch.allclose(corr[:, 5, :, :-1],
                          torch.nn.functional.cosine_similarity(fa[..., :-1], fb[..., 1:], dim=1),
                          atol=1e-5)


def test_the_fine_features_are_turned_back_by_the_head_angle(photo):
    """What the stage turns back by (the head's angle less its offset C) brings the second
    image's fine features onto the first's: their cells match far better than turned the
    other way."""
    net = model_from_checkpoint(load_checkpoint(DEFAULT_MODEL))
    cfg = net.cfg
    assert cfg.residual  # the shipped model has a residual stage
    pairs = [cut_pair(photo, 250, 250, (angle, 0.0, 0.0)) for angle in (25.0, 140.0, 300.0)]
    a, b = (model_input(cfg, torch.as_tensor(np.stack(x), dtype=torch.float32))
            for x in zip(*pairs, strict=True))
    with torch.no_grad():
        (_, fine_a), (_, fine_b) = net.embed(a), net.embed(b)
        truth = torch.tensor([25.0, 140.0, 300.0])

        def match(angle: torch.Tensor) -> torch.Tensor:
            back = geometry.warp(fine_b, angle)
            return local_correlation(fine_a, back, 0)[:, 0, 4:12, 4:12].mean(dim=(1, 2))

        assert (match(-truth) > match(truth) + 0.1).all()


def test_residual_only_trains_the_stage_alone():
    torch.manual_seed(2)
    net = AlignNet(with_residual(preset("cpu"), residual_only=True))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net.train()
    for _ in range(3):
        a, b = torch.randn(6, 64, 64), torch.randn(6, 64, 64)
        loss = udl_loss(net(a, b), net(torch.rot90(a, 1, (-2, -1)), b),
                        torch.full((6,), 90.0), "vector")
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = net.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("residual.") for k in changed)


def test_a_residual_stage_is_refused_where_it_cannot_work():
    with pytest.raises(ValueError, match="residual"):
        NetConfig.from_dict({**preset("cpu").to_dict(), "residual": (8,), "symmetry": 2})


def test_a_residual_stage_fine_tunes_from_a_model_without_one(photo_dir, tmp_path):
    base = tmp_path / "base.pt"
    net = {"size": 32, "channels": [8, 8, 16, 16], "fc": [32, 32], "match_channels": [8, 8],
           "mask_channels": [4]}
    common = dict(images=str(photo_dir), steps=2, batch_size=4, val_pairs=8, val_every=2,
                  calib_groups=8, noise="gaussian:0.5")
    train(TrainConfig(**common, net=net), base, progress=False, log=lambda *_: None)
    first = load_checkpoint(base)
    state = train(TrainConfig(**common, init=str(base),
                              net={"residual": [8], "residual_only": True,
                                   "residual_offset": first["offset"]}),
                  tmp_path / "res.pt", progress=False, log=lambda *_: None)
    assert tuple(state["net"]["residual"]) == (8,)
    for key, value in first["model"].items():  # the rest as it was
        assert torch.equal(state["model"][key], value), key
    # a run that trains the network itself (here for a C2 particle) starts without the stage
    again = train(TrainConfig(**common, init=str(tmp_path / "res.pt"), net={"symmetry": 2}),
                  tmp_path / "c2.pt", progress=False, log=lambda *_: None)
    assert tuple(again["net"]["residual"]) == () and not again["net"]["residual_only"]
    assert not any(k.startswith("residual.") for k in again["model"])


def test_residual_steps_apply_the_stage_again_from_its_own_angle():
    torch.manual_seed(3)
    once = AlignNet(with_residual(preset("cpu"), residual_offset=10.0))
    torch.nn.init.normal_(once.residual.out.weight, std=0.05)  # a stage that corrects
    torch.nn.init.constant_(once.residual.out.bias, 5.0)
    twice = AlignNet(with_residual(preset("cpu"), residual_offset=10.0, residual_steps=2))
    twice.load_state_dict(once.state_dict())
    once.eval()
    twice.eval()
    x, y = torch.randn(3, 64, 64), torch.randn(3, 64, 64)
    with torch.no_grad():
        first = once(x, y)
        (_, fine_x), (_, fine_y) = once.embed(x), once.embed(y)
        angle = torch.rad2deg(torch.atan2(first[:, 1], first[:, 0]))
        turn = torch.deg2rad(once.residual(fine_x, fine_y, angle))
        expected = torch.stack([torch.cos(turn) * first[:, 0] - torch.sin(turn) * first[:, 1],
                                torch.sin(turn) * first[:, 0] + torch.cos(turn) * first[:, 1]],
                               1)
        assert not torch.allclose(first, expected, atol=1e-4)
        assert torch.allclose(twice(x, y), expected, atol=1e-5)
    with pytest.raises(ValueError, match="residual steps"):
        with_residual(preset("cpu"), residual_steps=0)


def test_a_residual_stage_from_the_command_line(photo_dir, tmp_path, capsys):
    from udl_align.cli import main

    base, res = tmp_path / "base.pt", tmp_path / "res.pt"
    small = ["--data", str(photo_dir), "--steps", "2", "--batch-size", "4", "--quiet"]
    assert main(["train", *small, "--out", str(base)]) == 0
    assert main(["train", *small, "--out", str(res), "--init", str(base),
                 "--residual-stage", "8"]) == 0
    state = load_checkpoint(res)
    assert tuple(state["net"]["residual"]) == (8,) and state["net"]["residual_only"]
    assert state["net"]["residual_offset"] == load_checkpoint(base)["offset"]
    capsys.readouterr()
    for bad in (["--init", str(base), "--residual-stage", "8,x"], ["--residual-stage", "8"]):
        assert main(["train", *small, "--out", str(tmp_path / "bad.pt"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--residual-stage" in err[0]
    assert not (tmp_path / "bad.pt").exists()
