"""One plain training loop for the three objectives (``udl``, ``supervised``, ``stn``), one step
function each, with checkpoints that hold everything needed to resume or to align: the
network's config and weights, the training config, optimiser, random states, step, history and
the offset C.

Learning rate (:func:`learning_rate`): the paper's steps (x ``lr_gamma`` every ``lr_step``
steps), or a cosine over the run's budget (``lr_schedule="cosine"``, the particle default):
over ``minutes`` of training time when a time budget is given, else over ``steps``.

Inputs to the network (:func:`udl_align.network.inputs.model_input`): each image's impulses are
repaired (the shared pre-processing of :mod:`udl_align.filters`), then it is resampled to the
model's size (bilinear with antialiasing), standardised (zero mean, unit variance) and
multiplied by the same soft circular mask, so empty rotated corners carry no angle.

UDL batches (:func:`udl_batch`): each pair ``(I1, I2)`` is seen twice, as ``A`` and ``B``, each
image turned by its own random angle (uniform on the circle) and shifted by up to
``disturb_shift`` pixels, with the same resampling (bilinear, reflection padding, at the source
resolution before the down-sampling) for both, so blur cannot tell ``A`` from ``B``. The two
images of a pair never share a noise realisation (the generator adds noise to each). The target
of ``F(A) - F(B)`` is ``(a2 - a1) - (b2 - b1)``.

Weights (``--objective search``'s defaults): with ``cfg.ema`` the checkpoints' ``model`` is a
moving average of the trained weights (:func:`ema_update`), and the search objective measures
it every ``val_every`` steps against the exhaustive search on held-out particles
(:func:`search_difference`, no labels) and ends with the closest weights (:func:`keep_best`).

Random numbers: ``cfg.seed`` seeds torch's global generator just before the network is built
(its initial weights), the pair source (numpy generators ``rng`` and ``noise_rng``) and
``torch.Generator(seed + 1)`` for UDL's disturbances; the checkpoints save the last two, so a
resumed run of a step budget ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from udl_align import distributed, geometry
from udl_align.aligners.base import run_aligner
from udl_align.aligners.bruteforce import BruteForce
from udl_align.aligners.network import TRUST_PAIRS, NetworkAligner, search_agreement
from udl_align.errors import InputError, checked_device
from udl_align.filters import repair_impulses
from udl_align.io.files import check_writable
from udl_align.io.pairs import Pairs, read_pairs
from udl_align.network.calibration import offset_label_free, offset_labelled
from udl_align.network.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    model_from_checkpoint,
    resolve_model_path,
    save_checkpoint,
)
from udl_align.network.inputs import input_mask, model_input
from udl_align.network.losses import stn_loss, supervised_loss, udl_loss
from udl_align.network.models import AlignNet, NetConfig, preset, to_device
from udl_align.network.predict import predict_angles
from udl_align.training.config import (
    CALIBRATION,
    LR_FLOOR,
    OBJECTIVES,
    VALIDATION,
    TrainConfig,
    field_default,
)
from udl_align.training.log import write_history
from udl_align.training.sources import batch_stream, default_sources, search_cache_path

# --------------------------------------------------------------------------------------------
# UDL's disturbed copies
# --------------------------------------------------------------------------------------------


def disturb(images: torch.Tensor, angles: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    return geometry.warp(images, angles, shifts[:, 0], shifts[:, 1], padding_mode="reflection")


def split_noise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two half-size copies of each image with independent white noise: the pixels of even
    rows and columns, and those of odd ones (the same content, half a pixel apart)."""
    n = x.shape[-1] // 2 * 2
    return x[..., 0:n:2, 0:n:2], x[..., 1:n:2, 1:n:2]


def udl_batch(a: torch.Tensor, b: torch.Tensor, disturb_shift: float, gen: torch.Generator,
              rows: slice = slice(None), total: int | None = None, split: bool = False):
    """Two disturbed copies ``A``, ``B`` of each pair, and the target of ``F(A) - F(B)``.

    ``a``, ``b`` may be one process's ``rows`` of a batch of ``total`` pairs: the random
    disturbances are drawn for the whole batch (so every process's streams stay in step) and
    this process's rows are used.

    ``split``: ``A`` is made from the even pixels of each image and ``B`` from the odd ones
    (:func:`split_noise`), so ``A`` and ``B`` share the content but not the noise. Otherwise
    the UDL loss, which only compares turned copies of the same images, is met by any feature
    that turns with its image, such as the image's own noise: on particles at SNR 0.1 that is
    what a network learned (training loss 19-28 deg, validation at chance)."""
    n = a.shape[0] if total is None else total
    # drawn on the CPU generator (the same numbers on any device), used where the images are
    ang = (torch.rand(4, n, generator=gen) * 360.0)[:, rows].to(a.device)
    shift = ((torch.rand(4, n, 2, generator=gen) * 2.0 - 1.0) * disturb_shift)[:, rows]
    shift = shift.to(a.device)
    if split:
        (a0, a1), (b0, b1) = split_noise(a), split_noise(b)
        shift = shift / 2.0  # source pixels, on half-size images
    else:
        a0 = a1 = a
        b0 = b1 = b
    pair_a = (disturb(a0, ang[0], shift[0]), disturb(b0, ang[1], shift[1]))
    pair_b = (disturb(a1, ang[2], shift[2]), disturb(b1, ang[3], shift[3]))
    target = (ang[1] - ang[0]) - (ang[3] - ang[2])
    return pair_a, pair_b, target


# --------------------------------------------------------------------------------------------
# A run and its steps
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One training run: what its steps use and what its checkpoints save."""

    cfg: TrainConfig
    net_cfg: NetConfig
    model: AlignNet
    trainee: torch.nn.Module  # what the steps run through: the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    source: object  # this process's pair source (its random states are checkpointed)
    gen: torch.Generator  # UDL's disturbances
    device: torch.device
    mask: torch.Tensor  # the network's input mask
    rows: slice  # this process's rows of every batch
    average: torch.optim.swa_utils.AveragedModel | None = None  # the weights' EMA (cfg.ema)
    # objective search: the aligning weights with the smallest difference from the exhaustive
    # search on held-out particles so far ({"step", "search_val_deg", "weights"})
    best: dict | None = None
    step: int = 0
    history: list = field(default_factory=list)
    seconds_before: float = 0.0  # training time of the run's earlier (resumed) calls
    started: float = field(default_factory=time.time)  # when this call's steps began

    @property
    def aligner(self) -> AlignNet:
        """The network that validation, checkpoints and calibration use: the moving average
        of the weights when the run keeps one, else the trained weights themselves."""
        return self.average.module if self.average is not None else self.model

    def seconds(self) -> float:
        """The run's training time."""
        return self.seconds_before + (time.time() - self.started)

    def done(self) -> float:
        """How much of the budget is spent, from 0 to 1: the training time against the
        earlier calls' time plus this call's ``minutes``, or else the steps against
        ``steps``."""
        if self.cfg.minutes:
            return min(self.seconds() / (self.seconds_before + self.cfg.minutes * 60), 1.0)
        return min(self.step / max(self.cfg.steps, 1), 1.0)

    def checkpoint(self) -> dict:
        """Everything needed to resume; ``offset`` is set by calibration at the end.
        ``model`` holds the weights that align (the average, when kept); ``trained`` and
        ``average`` the trained weights and the average's state, to resume."""
        averaged = {} if self.average is None else {
            "trained": self.model.state_dict(), "average": self.average.state_dict()}
        if self.best is not None:
            averaged["best"] = self.best
        return {
            "format": CHECKPOINT_FORMAT, "net": self.net_cfg.to_dict(),
            "train": self.cfg.to_dict(), "model": self.aligner.state_dict(), **averaged,
            "optimizer": self.opt.state_dict(),
            "step": self.step, "history": self.history, "train_seconds": self.seconds(),
            "rng": {"pairs": self.source.rng.bit_generator.state,
                    "noise": self.source.noise_rng.bit_generator.state,
                    "torch": self.gen.get_state()},
            "offset": None,
        }


def pair_images(run: Run, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's rows of a batch on the training device, impulses repaired before any
    turn smears them (``model_input`` repairs what it is given)."""
    a = repair_impulses(torch.from_numpy(batch.a[run.rows]).to(run.device))
    b = repair_impulses(torch.from_numpy(batch.b[run.rows]).to(run.device))
    return a, b


def udl_step(run: Run, batch) -> torch.Tensor:
    """UDL's loss on a batch: the difference of the outputs for the two disturbed copies of
    each pair against the difference of their disturbances (no labels used)."""
    a, b = pair_images(run, batch)
    cfg, net_cfg = run.cfg, run.net_cfg
    (a1, b1), (a2, b2), target = udl_batch(a, b, cfg.disturb_shift, run.gen, run.rows,
                                           cfg.batch_size, cfg.split_views)
    prep = [model_input(net_cfg, x, run.mask) for x in (a1, b1, a2, b2)]
    outs = run.trainee(torch.cat([prep[0], prep[2]]), torch.cat([prep[1], prep[3]]))
    out_a, out_b = outs.chunk(2)
    # spectra: the head works on the doubled circle
    return udl_loss(out_a, out_b, target * net_cfg.angle_factor, net_cfg.head)


def supervised_step(run: Run, batch) -> torch.Tensor:
    """The supervised loss on a batch: the outputs against the pairs' angles (true, or the
    exhaustive search's). With ``cfg.turn_augment`` the second image is first turned by a
    random angle (uniform on the circle) and the target moves with it: new pairs from the same
    images, so a finite stack is not learned by heart. The first stays as it is: with a
    reference it is the reference, which ``align`` never turns (turning it too left the
    network's angle 15 deg off on unturned references after a short run)."""
    a, b = pair_images(run, batch)
    angle = torch.from_numpy(batch.angle[run.rows]).float().to(run.device)
    cfg = run.cfg
    turn, shift = torch.zeros(cfg.batch_size), torch.zeros(cfg.batch_size, 2)
    if cfg.turn_augment:
        turn = torch.rand(cfg.batch_size, generator=run.gen) * 360.0
    if cfg.augment_shift:
        shift = (torch.rand(cfg.batch_size, 2, generator=run.gen) * 2 - 1) * cfg.augment_shift
    if cfg.turn_augment or cfg.augment_shift:
        turn = turn[run.rows].to(run.device)
        b = disturb(b, turn, shift[run.rows].to(run.device))
        angle = angle + turn
    if cfg.augment_noise:
        noise = torch.randn(cfg.batch_size, *b.shape[1:], generator=run.gen)[run.rows]
        b = b + cfg.augment_noise * b.std(dim=(-2, -1), keepdim=True) * noise.to(run.device)
    pa, pb = model_input(run.net_cfg, a, run.mask), model_input(run.net_cfg, b, run.mask)
    angle = angle * run.net_cfg.angle_factor
    return supervised_loss(run.trainee(pa, pb), angle, run.net_cfg.head)


def stn_step(run: Run, batch) -> torch.Tensor:
    """The STN baseline's loss on a batch: the first image warped by the predicted transform
    against the second (no labels used)."""
    a, b = pair_images(run, batch)
    pa, pb = model_input(run.net_cfg, a, run.mask), model_input(run.net_cfg, b, run.mask)
    return stn_loss(run.trainee(pa, pb), pa, pb, run.mask, run.net_cfg.size / 8.0)


#: ``search`` is supervised learning with the exhaustive search's poses as the targets
#: (:func:`udl_align.training.sources.search_poses`)
STEPS = {"udl": udl_step, "supervised": supervised_step, "stn": stn_step,
         "search": supervised_step}
assert tuple(STEPS) == OBJECTIVES


def learning_rate(cfg: TrainConfig, step: int, done: float) -> float:
    """The learning rate at ``step``, with the share ``done`` of the budget spent: the
    paper's steps (x ``lr_gamma`` every ``lr_step`` steps), or ``lr`` for the first
    ``lr_hold`` of the budget, then a half cosine down to ``LR_FLOOR`` x ``lr`` at its end."""
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_gamma ** (step // cfg.lr_step)
    falling = max(done - cfg.lr_hold, 0.0) / (1.0 - cfg.lr_hold)
    return cfg.lr * (LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * falling)))


def optimise(run: Run, loss: torch.Tensor, done: float) -> None:
    """One optimiser step on ``loss`` at the learning rate of the run's step and the share
    ``done`` of its budget (every rank is given rank 0's)."""
    lr = learning_rate(run.cfg, run.step, done)
    for group in run.opt.param_groups:
        group["lr"] = lr
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    if run.average is not None:
        run.average.update_parameters(run.model)
    run.step += 1


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validation_set(run: Run, make_source) -> dict:
    """A fixed validation set from *training* data at other places (a test split stays
    unseen), prepared as the network sees it."""
    batch = make_source(run.cfg, VALIDATION).sample(run.cfg.val_pairs)

    def prepared(images: np.ndarray) -> torch.Tensor:
        return model_input(run.net_cfg, torch.from_numpy(images).to(run.device), run.mask)

    return {"a": prepared(batch.a), "b": prepared(batch.b), "angle": batch.angle}


#: objective search: held-out particles that the exhaustive search aligns once, to measure
#: the network against it (no labels) while it trains and keep its best weights
SEARCH_VAL_PAIRS = 256


def search_validation_set(run: Run, make_source) -> dict | None:
    """For the ``search`` objective, ``SEARCH_VAL_PAIRS`` held-out (reference, particle) pairs
    prepared as the network sees them, with the exhaustive search's angles; else ``None``."""
    if run.cfg.objective != "search":
        return None
    batch = make_source(run.cfg, VALIDATION).sample(SEARCH_VAL_PAIRS)
    est, _ = run_aligner(BruteForce(), batch.a, batch.b, progress=False)
    return {"a": model_input(run.net_cfg, torch.from_numpy(batch.a).to(run.device), run.mask),
            "b": model_input(run.net_cfg, torch.from_numpy(batch.b).to(run.device), run.mask),
            "angle": est.angle}


def search_difference(model: AlignNet, val: dict) -> float:
    """The mean difference (deg) of the network's single answers from the exhaustive
    search's angles of ``val`` (:func:`search_validation_set`), modulo what the network can
    know (360 deg / its angle factor): a validation error without labels."""
    factor = model.cfg.angle_factor
    raw = predict_angles(model, val["a"], val["b"]).numpy()
    return float(np.mean(geometry.angle_error(raw, factor * np.asarray(val["angle"])) / factor))


def keep_best(run: Run, difference: float) -> None:
    """Keep the aligning weights if they are the closest to the exhaustive search so far."""
    if run.best is None or difference < run.best["search_val_deg"]:
        weights = {k: v.detach().clone() for k, v in run.aligner.state_dict().items()}
        run.best = {"step": run.step, "search_val_deg": difference, "weights": weights}


def validation_error(model: AlignNet, val: dict) -> tuple[float, float, float]:
    """Mean and median error after removing the best constant offset (fitted on the labels
    of this validation set: a diagnostic of learning, not a result), and that offset. For a
    spectrum network the error is modulo 180 deg (what it can know)."""
    factor = model.cfg.angle_factor
    raw = predict_angles(model, val["a"], val["b"]).numpy()
    target = factor * np.asarray(val["angle"])
    offset = float(geometry.circular_mean(raw - target))
    err = geometry.angle_error(raw - offset, target) / factor
    return float(err.mean()), float(np.median(err)), offset


def validate(run: Run, val: dict, loss: float, search_val: dict | None = None) -> dict:
    """The history entry at the run's step: the running training loss, the training time,
    where the validation pairs have truth (a pairs file may have none) the validation errors
    (:func:`validation_error`), and with ``search_val`` the difference from the exhaustive
    search (:func:`search_difference`; the best weights by it are kept)."""
    entry = {"step": run.step, "loss": loss, "seconds": run.seconds()}
    if search_val is not None:
        entry["search_val_deg"] = search_difference(run.aligner, search_val)
        keep_best(run, entry["search_val_deg"])
    if np.isfinite(val["angle"]).all():
        mean_err, median_err, _ = validation_error(run.aligner, val)
        entry.update(val_mean_deg=mean_err, val_median_deg=median_err)
    return entry


def shown(entry: dict, deadline: float | None) -> dict:
    """What the progress bar shows of a history entry; under a time budget also the time left
    (the bar has no step total, so no ETA of its own)."""
    out = {k.replace("_deg", ""): f"{v:.1f}" for k, v in entry.items()
           if k in ("loss", "val_mean_deg", "val_median_deg")}
    if deadline:
        out["left"] = f"{max(deadline - time.time(), 0) / 60:.1f}min"
    return out


# --------------------------------------------------------------------------------------------
# Budget and checkpoints
# --------------------------------------------------------------------------------------------


def finished(step: int, steps: int, deadline: float | None) -> bool:
    """Whether the budget is spent: ``steps`` steps, or the wall time up to ``deadline``."""
    return step >= steps if deadline is None else time.time() >= deadline


class CheckpointCadence:
    """When a checkpoint is due: after ``minutes`` of wall time since the last one, and at
    every multiple of ``steps`` steps (0: by time only)."""

    def __init__(self, minutes: float, steps: int, now: float) -> None:
        self.seconds, self.steps, self.last = minutes * 60, steps, now

    def due(self, step: int) -> bool:
        return (time.time() - self.last > self.seconds
                or bool(self.steps and step % self.steps == 0))

    def saved(self) -> None:
        self.last = time.time()


def resumed(cfg: TrainConfig, out: Path, resume: bool, log) -> tuple[TrainConfig, dict | None]:
    """The config to train with, and the checkpoint in ``out`` to continue (``None``: a new
    run). A resumed run keeps its saved config, except a step budget (``steps=None`` keeps the
    saved one) and the ``minutes``, ``device`` and ``workers`` of this call."""
    state = load_checkpoint(out) if resume and out.exists() else None
    if state is not None and "optimizer" not in state:
        raise InputError("is an exported model (no optimiser state): it cannot be resumed", out)
    if resume and state is None:
        log(f"{out} does not exist yet: starting a new run")
    if state is None:
        if cfg.steps is None:
            cfg = TrainConfig.from_dict({**cfg.to_dict(), "steps": field_default("steps")})
        return cfg, None
    saved = state["train"]
    return TrainConfig.from_dict({**saved, "steps": saved["steps"] if cfg.steps is None
                                  else cfg.steps, "minutes": cfg.minutes,
                                  "device": cfg.device, "workers": cfg.workers}), state


def restore(run: Run, state: dict) -> None:
    """Continue ``run`` from checkpoint ``state``: weights, optimiser, step, history,
    training time and the random states of the pairs and of the disturbances."""
    run.model.load_state_dict(state.get("trained", state["model"]))
    if run.average is not None:
        if "average" in state:
            run.average.load_state_dict(state["average"])
        else:  # a run without an average so far: it starts at the saved weights
            run.average.module.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.best = state.get("best")
    run.step, run.history = state["step"], state["history"]
    run.seconds_before = state.get("train_seconds", 0.0)
    run.source.rng.bit_generator.state = state["rng"]["pairs"]
    run.source.noise_rng.bit_generator.state = state["rng"]["noise"]
    run.gen.set_state(state["rng"]["torch"])


# --------------------------------------------------------------------------------------------
# Setting up
# --------------------------------------------------------------------------------------------


#: a residual stage (``NetConfig.residual``) may be added to a starting model that has none:
#: it starts at zero, so the model starts as it was
RESIDUAL_SETTINGS = ("residual", "residual_radius", "residual_project", "residual_range",
                     "residual_offset", "residual_steps", "residual_only")


def initial_weights(cfg: TrainConfig, net_cfg: NetConfig) -> tuple[NetConfig, dict | None]:
    """The network config and weights to start from: ``cfg.init``'s when given (its config
    wins over the preset: the weights only fit their own architecture)."""
    if not cfg.init:
        return net_cfg, None

    state = load_checkpoint(resolve_model_path(cfg.init))  # "default": the shipped model
    # what the network is fed, the resolution its mask module works at and the symmetry its
    # angle is read with may change (the weights fit either); its architecture may not. A new
    # run's symmetric head is today's kind (the starting model's was read with its own)
    fed = {k: cfg.net[k] for k in ("input", "input_lowpass", "mask_stride", "symmetry",
                                   "test_turns", "symmetric_head", *RESIDUAL_SETTINGS)
           if k in cfg.net}
    net, weights = state["net"], state["model"]
    if fed.get("residual") and "residual_offset" not in fed:
        # a new stage turns back by the frozen head's angle less the head's own offset C
        head_offset = net["residual_offset"] if net.get("residual") else state.get("offset")
        if head_offset is None:
            raise InputError("has no offset C for a residual stage to turn back by", cfg.init)
        fed["residual_offset"] = float(head_offset)
    if net.get("residual") and not any(k in cfg.net for k in RESIDUAL_SETTINGS):
        # a residual stage is trained on purpose, on a frozen network whose offset C it knows:
        # a run that trains the network itself (another objective, symmetry or data) starts
        # from the network without it
        net = {**net, "residual": (), "residual_only": False}
        weights = {k: v for k, v in weights.items() if not k.startswith("residual.")}
    init_cfg = NetConfig.from_dict({**net, "symmetric_head": NetConfig.symmetric_head, **fed})
    if (init_cfg.head == "rigid") != (cfg.objective == "stn"):
        raise InputError(f"has a '{init_cfg.head}' head, which does not fit objective "
                         f"'{cfg.objective}'", cfg.init)
    return init_cfg, weights


def network(cfg: TrainConfig, state: dict | None) -> tuple[NetConfig, dict | None]:
    """The network config and the weights to start from: a resumed run's own config; else the
    preset with ``cfg.net`` (a rigid head for the STN baseline), or ``cfg.init``'s."""
    net_cfg = preset(cfg.preset, **cfg.net)
    if cfg.objective == "stn":
        net_cfg.head = "rigid"
        if net_cfg.input != "image":
            raise InputError("the STN baseline warps images: it needs image input")
    if state is not None:
        return NetConfig.from_dict(state["net"]), None
    return initial_weights(cfg, net_cfg)


def load_start(model: AlignNet, weights: dict) -> None:
    """``weights`` into ``model``; a residual stage they lack keeps its initial (zero)
    output."""
    found = model.load_state_dict(weights, strict=False)
    missing = [k for k in found.missing_keys if not k.startswith("residual.")]
    if missing or found.unexpected_keys:
        raise RuntimeError(f"the starting weights do not fit the network: missing {missing}, "
                           f"unexpected {found.unexpected_keys}")


def ema_update(decay: float):
    """The moving average's update of one tensor after ``n`` earlier updates: its decay is
    ``decay``, or less for the first updates (``(1 + n) / (10 + n)``), so that a short run's
    average does not keep its starting weights."""

    def update(average: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return average + (current - average) * (1.0 - d)

    return update


def start_run(cfg: TrainConfig, state: dict | None, make_source
              ) -> tuple[Run, distributed.Ranks]:
    """The run's network, optimiser, pair source and generators, on this process's
    device, continued from ``state`` when given; and the processes (ranks) training it."""
    net_cfg, start_weights = network(cfg, state)
    device = checked_device(cfg.device)
    ranks = distributed.start(cfg.device)
    distributed.check_batch(ranks, cfg.batch_size)
    if device.type == "cuda" and ranks.active:
        device = torch.device("cuda", ranks.local_rank)
    torch.manual_seed(cfg.seed)
    model = AlignNet(net_cfg)
    if start_weights is not None:
        load_start(model, start_weights)
    to_device(model, device)
    trainee = distributed.wrap(model, ranks, device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                           betas=cfg.betas, eps=cfg.eps)
    average = None
    if cfg.ema:
        average = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_update(cfg.ema),
                                                      use_buffers=True)
    run = Run(cfg, net_cfg, model, trainee, opt, source=make_source(cfg, 0),
              gen=torch.Generator().manual_seed(cfg.seed + 1), device=device,
              mask=input_mask(net_cfg.size, device), rows=ranks.rows(cfg.batch_size),
              average=average)
    if state is not None:
        restore(run, state)
    return run, ranks


def labelled_pairs(path: str | Path | None) -> Pairs | None:
    """The pairs with true angles to calibrate with, if a path is given."""
    if not path:
        return None
    pairs = read_pairs(path)
    if not pairs.has_truth:
        raise InputError("has no truth to calibrate with", path)
    return pairs


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    log=print,
    make_source=None,
    calibrate_with: str | Path | None = None,
) -> dict:
    """Train (or resume) and write checkpoints to ``out``; returns the final checkpoint.

    ``make_source(cfg, seed_offset)`` builds the pair source (default: photographs of
    ``cfg.images``, train split); any object with ``sample(n) -> PairBatch``,
    ``sample_views(n, k)`` and numpy generators ``rng`` and ``noise_rng`` will do.

    The offset C is estimated without labels (:func:`calibrate`), or, with ``calibrate_with``
    (a pairs ``.npz`` with truth), from those labelled pairs (:func:`calibrate_labelled`).

    Under ``torchrun`` every process runs this (:mod:`udl_align.distributed`): each trains on
    its share of every batch, rank 0 alone validates, writes checkpoints and calibrates, and
    the other ranks return ``{}``.
    """
    if cfg.objective not in OBJECTIVES:
        raise InputError(f"unknown objective '{cfg.objective}' (expected one of "
                         f"{', '.join(OBJECTIVES)})")
    labelled = labelled_pairs(calibrate_with)
    out = check_writable(out)
    cfg, state = resumed(cfg, out, resume, log)
    make_source = make_source or default_sources(cfg, progress, search_cache_path(out))
    run, ranks = start_run(cfg, state, make_source)
    if state is not None:
        log(f"resuming {out} at step {run.step}")
    val = validation_set(run, make_source)
    search_val = search_validation_set(run, make_source) if ranks.main else None
    loss = train_steps(run, ranks, val, make_source, out, progress and ranks.main, search_val)
    final = {}
    if ranks.main:
        if search_val is not None:  # the last weights are a candidate too
            keep_best(run, search_difference(run.aligner, search_val))
            run.aligner.load_state_dict(run.best["weights"])
        final = run.checkpoint()
        final.update(calibrate(run.aligner, cfg, make_source(cfg, CALIBRATION)))
        if labelled is not None:
            final.update(calibrate_labelled(final, labelled, str(calibrate_with)))
        final["trust"] = trust_check(run.aligner, final["offset"], make_source(cfg, VALIDATION),
                                     run.device)
        record_trust(run, final["trust"], loss)
        final["history"] = run.history
        save_checkpoint(out, final)
        write_history(out, run.history)
    distributed.barrier(ranks)
    distributed.stop(ranks)
    return final


def train_steps(run: Run, ranks: distributed.Ranks, val: dict, make_source, out: Path,
                progress: bool, search_val: dict | None = None) -> float | None:
    """Step ``run`` until its budget is spent, recording validation errors every
    ``val_every`` steps and writing checkpoints to ``out`` as they fall due. The processes
    take rank 0's decisions to stop and to checkpoint, so they do both at the same step.
    Returns the running training loss (``None`` if no step was taken)."""
    cfg = run.cfg
    run.started = time.time()
    deadline = run.started + cfg.minutes * 60 if cfg.minutes else None
    cadence = CheckpointCadence(cfg.checkpoint_minutes, cfg.checkpoint_steps, run.started)
    step = STEPS[cfg.objective]
    run.model.train()
    total = None if deadline else cfg.steps
    bar = tqdm(total=total, initial=run.step if total else 0, desc=f"train {cfg.objective}",
               unit="step", disable=not progress)
    batches = batch_stream(make_source, cfg, run.source, run.step)
    running = None
    while not distributed.agree(ranks, finished(run.step, cfg.steps, deadline))[0]:
        loss = step(run, next(batches))
        optimise(run, loss, distributed.rank0_value(ranks, run.done()))
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.update(1)
        if run.step % cfg.val_every == 0 and ranks.main:
            run.history.append(validate(run, val, running, search_val))
            bar.set_postfix(shown(run.history[-1], deadline))
        if distributed.agree(ranks, cadence.due(run.step))[0]:
            if ranks.main:  # the ranks' weights and random states are the same
                checkpoint_with_log(run, make_source, out, running)
            cadence.saved()
    bar.close()
    batches.close()  # ends the pair-making processes, if any
    return running


def checkpoint_with_log(run: Run, make_source, out: Path, loss: float | None) -> None:
    """A checkpoint, with the trust check at this step (with the offset C as at the end:
    label-free for UDL, zero otherwise) recorded in the history, and the CSV / PNG log
    beside it."""
    offset = 0.0
    if run.cfg.objective == "udl":
        views, _ = make_source(run.cfg, CALIBRATION).sample_views(run.cfg.calib_groups, 3)
        offset = offset_label_free(run.aligner, views)["offset"]
    record_trust(run, trust_check(run.aligner, offset, make_source(run.cfg, VALIDATION),
                                  run.device), loss)
    save_checkpoint(out, run.checkpoint())
    write_history(out, run.history)


# --------------------------------------------------------------------------------------------
# Calibration and the trust check
# --------------------------------------------------------------------------------------------


def trust_check(model: AlignNet, offset: float, source, device: torch.device) -> dict:
    """The label-free trust check (:func:`udl_align.aligners.network.search_agreement`) of
    ``model`` with offset C ``offset`` on ``TRUST_PAIRS`` unlabelled pairs of ``source`` (the
    validation source: held-out particles of a stack; the same pairs at every checkpoint)."""
    batch = source.sample(TRUST_PAIRS)
    return search_agreement(NetworkAligner(model, offset=offset, device=device),
                            batch.a, batch.b)


def record_trust(run: Run, trust: dict, loss: float | None) -> None:
    """Put a trust check's agreement (and its chance level) into the history entry of the
    run's step, adding one (with the running training ``loss``) if the step has none."""
    if not run.history or run.history[-1]["step"] != run.step:
        run.history.append({"step": run.step, "loss": loss, "seconds": run.seconds()})
    run.history[-1].update(search_agreement=trust["agreement"], search_chance=trust["chance"])



def calibrate(model: AlignNet, cfg: TrainConfig, source) -> dict:
    """What a trained model needs to align, from unlabelled view triples of training data:
    the offset C (label-free for UDL; zero for the objectives trained against true angles)
    and, for 2-vector heads, the confidence floor: 0 (none; ``align --confidence-floor`` sets
    one). Returns checkpoint entries: ``offset``, ``offset_info``, ``confidence_floor``."""

    # no pair goes to --refine's whole circle for its confidence alone: the window's own
    # checks (its edge, probes at quarter turns, its best score against the batch's:
    # guided.LOW_SHARE) find the windows that missed. A floor at the 15% quantile of the
    # confidence on training pairs changed no error on the strict Table 2 test stacks (it sent
    # 13-22% of the particles there) and cost 10-15% of refine's speed; on held-out
    # photographs (200 pairs, seven conditions, both generators, side by side) it moved the
    # means by at most 0.07 deg, either way, and cost 5-25% of the speed
    floor = None if model.cfg.head == "scalar" else 0.0
    if cfg.objective != "udl":
        return {"offset": 0.0, "confidence_floor": floor,
                "offset_info": {"method": f"none ({cfg.objective} learns the angle itself)"}}
    info = offset_label_free(model, source.sample_views(cfg.calib_groups, 3)[0])
    info["method"] = "label-free (antisymmetry + cycles)"
    return {"offset": info["offset"], "offset_info": info, "confidence_floor": floor}


def calibrate_labelled(state: dict, pairs: Pairs, name: str) -> dict:
    """The offset C of checkpoint ``state``'s model from ``pairs`` with true angles (named
    ``name`` in ``offset_info["method"]``), the paper's way; the label-free estimate stays in
    ``offset_info["label_free"]``. Returns checkpoint entries: ``offset``, ``offset_info``."""
    info = offset_labelled(model_from_checkpoint(state), pairs.a, pairs.b, pairs.angle)
    info["method"] = f"labelled ({name})"
    info["label_free"] = state["offset_info"]
    return {"offset": info["offset"], "offset_info": info}
