"""One plain training loop for the three objectives (``udl``, ``supervised``, ``stn``), with
checkpoints that hold everything needed to resume or to align: the network's config and weights,
the training config, optimiser, scheduler, random states, step, history and the offset C.

Inputs to the network (:func:`prepare_input`): each image's impulses are repaired (the shared
pre-processing of :mod:`udl_align.filters`), then it is resampled to the model's size
(bilinear with antialiasing), standardised (zero mean, unit variance) and multiplied by the same
soft circular mask, so empty rotated corners carry no angle.

UDL batches (:func:`udl_batch`): each pair ``(I1, I2)`` is seen twice, as ``A`` and ``B``, each
image turned by its own random angle (uniform on the circle) and shifted by up to
``disturb_shift`` pixels, with the same resampling (bilinear, reflection padding, at the source
resolution before the down-sampling) for both, so blur cannot tell ``A`` from ``B``. The two
images of a pair never share a noise realisation (the generator adds noise to each). The target
of ``F(A) - F(B)`` is ``(a2 - a1) - (b2 - b1)``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import distributed, geometry
from .aligners.correlation import gaussian_lowpass, image_std, standardise
from .errors import InputError, checked_device
from .filters import repair_impulses
from .io import atomic_output, check_writable, read_pairs
from .losses import angle_of, stn_loss, supervised_loss, udl_loss
from .models import AlignNet, NetConfig, preset, to_device
from .synth import NaturalPairSource, PairFileSource

CHECKPOINT_FORMAT = "udl-align-model/1"
OBJECTIVES = ("udl", "supervised", "stn")


@dataclass
class TrainConfig:
    objective: str = "udl"
    preset: str = "cpu"
    images: str = ""  # folder of photographs (the natural-image generator) or a pairs .npz
    init: str = ""  # checkpoint whose weights (and network config) start the run: fine-tuning
    noise: str = "mix"
    source_size: int = 128  # pairs are made at this size, then resampled to the model's
    max_shift: int = 10
    disturb_shift: float = 5.0  # UDL disturbance shift range (source pixels), as the authors
    batch_size: int = 32
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_step: int = 12000  # lr x lr_gamma every lr_step steps (the paper's schedule)
    lr_gamma: float = 0.8
    steps: int | None = 1000  # None on resume: keep the run's saved budget
    minutes: float | None = None
    seed: int = 0
    checkpoint_minutes: float = 3.0
    checkpoint_steps: int = 0  # also a checkpoint every this many steps (0: by time only)
    val_pairs: int = 64
    val_every: int = 100
    calib_groups: int = 256  # unlabelled view triples for the label-free offset C
    device: str = "cpu"  # where the network trains ("cuda" for a GPU); pairs are made on CPU
    workers: int = 0  # processes making pairs beside the training one (a GPU outruns one)
    group_by: str = ""  # particle stacks: pair particles only within groups of this STAR column
    split_views: bool = False  # UDL's A and B from the even / odd pixels (see udl_batch)
    reference: str = ""  # particle stacks: pairs are (this reference, a particle)
    net: dict = field(default_factory=dict)  # overrides of the preset's NetConfig

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = set(cls.__dataclass_fields__)
        clean = {k: tuple(v) if k == "betas" else v for k, v in d.items() if k in names}
        return cls(**clean)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def input_mask(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.as_tensor(geometry.soft_circular_mask(size, size / 2 - 1, edge=size / 16),
                           device=device)


def prepare_input(images: torch.Tensor, size: int, mask: torch.Tensor | None = None,
                  kind: str = "image", lowpass: float = 0.0, repair: bool = True):
    """``(B, S, S)`` -> ``(B, size, size)``: repair impulses (unless the caller has:
    ``repair=False``), resample, standardise, mask (see module doc).

    ``kind="spectrum"``: the background level (mean outside the mask) is subtracted instead of
    the mean, so a centred particle on flat background leaves no fixed disc behind that would
    mix with it (the spectrum would then change with the particle's shift); then
    ``log(1 + |FFT|)``, centred (``fftshift``), standardised and masked again (the disc keeps
    frequencies up to Nyquist in every direction alike).
    """
    x = images[:, None] if images.dim() == 3 else images
    x = repair_impulses(x) if repair else x
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    x = x[:, 0]
    if lowpass > 0:
        x = gaussian_lowpass(x, lowpass)
    mask = input_mask(size, x.device) if mask is None else mask
    if kind != "spectrum":
        return standardise(x, floor=1e-6) * mask
    outside = mask < 0.5
    level = x[:, outside].mean(dim=1)[:, None, None]
    x = (x - level) / image_std(x).clamp_min(1e-6) * mask
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)).abs()
    return standardise(torch.log1p(spectrum), floor=1e-6) * mask


def model_input(cfg: NetConfig, images: torch.Tensor, mask: torch.Tensor | None = None,
                repair: bool = True):
    """What network ``cfg`` takes: :func:`prepare_input` at its size, of its kind, filtered."""
    return prepare_input(images, cfg.size, mask, cfg.input, cfg.input_lowpass, repair)


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
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: dict) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(f"not a readable udl-align checkpoint: {type(exc).__name__}",
                         path) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError("not a udl-align checkpoint (unknown format)", path)
    return state


def export_for_inference(state: dict) -> dict:
    """A checkpoint without optimiser, scheduler and random states: what ``align`` needs (the
    config, weights, offset C) plus the record of how it was trained. Cannot be resumed."""
    keep = ("format", "net", "train", "model", "step", "history", "train_seconds", "offset",
            "offset_info", "confidence_floor")
    return {k: state[k] for k in keep if k in state}


def model_from_checkpoint(state: dict, path: str | Path = "checkpoint") -> AlignNet:
    model = AlignNet(NetConfig.from_dict(state["net"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:  # e.g. weights of a 128 px network under a 64 px config
        raise InputError(f"its weights do not fit its network config (input size "
                         f"{state['net'].get('size')} px)", path) from None
    return model.eval()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_outputs(model: AlignNet, a: torch.Tensor, b: torch.Tensor, batch: int = 128):
    """Raw head outputs (on CPU) for already prepared inputs, in eval mode."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = [model(a[i : i + batch].to(dev), b[i : i + batch].to(dev)).cpu()
           for i in range(0, len(a), batch)]
    model.train(was_training)
    return torch.cat(out)


def predict_angles(model: AlignNet, a: torch.Tensor, b: torch.Tensor, batch: int = 128):
    """Raw network angles (degrees, offset C not removed, on CPU) for prepared inputs."""
    return angle_of(predict_outputs(model, a, b, batch), model.cfg.head)


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


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


VALIDATION = 10_000  # seed offsets of the validation and calibration sources
CALIBRATION = 20_000


def is_particle_data(path: str | Path) -> bool:
    """A particle stack, or a STAR or cryoSPARC ``.cs`` file naming stacks (rather than
    photographs or a pairs file)."""
    return Path(path).suffix.lower() in (".mrcs", ".mrc", ".star", ".cs")


#: what differs by default when training on particles:
#: - the start: the shipped natural-image UDL model. From random weights the network's output
#:   hardly turns with a particle, and at a constant output the expected gradient of the UDL
#:   loss is zero (its targets are symmetric on the circle whatever the input): every run from
#:   scratch stayed at a constant (loss at chance), on clean particles too, while the natural
#:   model fine-tuned on clean particles reached 5 deg in 5 minutes;
#: - image input: spectra do not start learning under UDL even from photographs;
#: - rotation-only disturbances, as the authors' cryo-EM code (a shifted frame's border enters
#:   the network's mask, and its seam gives the disturbance away: measured, a training loss of
#:   55 deg with a validation error at chance);
#: - the input low-pass and split views (see NetConfig.input_lowpass and udl_batch).
PARTICLE_DEFAULTS = {"input": "image", "disturb_shift": 0.0, "input_lowpass": 0.25,
                     "split_views": True, "init": "default"}


def data_defaults(path: str | Path) -> dict:
    """The training settings (``PARTICLE_DEFAULTS``' keys) suited to the data at ``path``."""
    if is_particle_data(path):
        return dict(PARTICLE_DEFAULTS)
    return {"input": "image", "disturb_shift": TrainConfig.disturb_shift, "input_lowpass": 0.0,
            "split_views": False, "init": ""}


def default_sources(cfg: TrainConfig):
    """``make_source(cfg, seed_offset)`` for ``cfg.images``: photographs of a folder (train
    split; new pairs at every step), the pairs of a ``.npz``, or pairs of particles of a stack
    or STAR (:mod:`.particle_pairs`); the last two hold a tenth out for validation."""
    path = Path(cfg.images)
    if is_particle_data(path):
        from .particle_pairs import StackPairSource
        from .stacks import open_particles

        particles = open_particles(path)
        if cfg.objective == "supervised" and particles.transforms() is None:
            raise InputError("has no rlnAnglePsi and origins: supervised training needs "
                             "them", path)
        reference = None
        if cfg.reference:
            from .stack_align import read_reference

            reference = read_reference(cfg.reference, particles.size)
        return lambda c, offset: StackPairSource(
            particles, seed=c.seed + offset, group_by=c.group_by, reference=reference,
            part="val" if offset == VALIDATION else "train")
    if path.suffix.lower() != ".npz":
        return lambda c, offset: NaturalPairSource(
            c.images, size=c.source_size, noise=c.noise, max_shift=c.max_shift,
            seed=c.seed + offset, split="train")
    pairs = read_pairs(path)
    if cfg.objective == "supervised" and not pairs.has_truth:
        raise InputError("has no true angles: supervised training needs them", path)
    return lambda c, offset: PairFileSource(pairs, seed=c.seed + offset,
                                            part="val" if offset == VALIDATION else "train")


WORKER_SEEDS = 1_000_000  # seed offsets of pair-making processes: far from the split offsets


class _SourceBatches(torch.utils.data.IterableDataset):
    """Endless batches of one source per worker process, each seeded from the run's seed, the
    step the workers started at (a resumed run draws new pairs) and the worker's number."""

    def __init__(self, make_source, cfg: TrainConfig, start_step: int):
        super().__init__()
        self.make_source, self.cfg, self.start_step = make_source, cfg, start_step

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        offset = WORKER_SEEDS * (1 + (worker.id if worker else 0)) + self.start_step
        source = self.make_source(self.cfg, offset)
        while True:
            yield source.sample(self.cfg.batch_size)


def batch_stream(make_source, cfg: TrainConfig, source, start_step: int):
    """The training batches: from ``source`` in this process (reproducible to the pair, and
    resumed from its saved random state), or from ``cfg.workers`` processes in turn (seeded;
    the data loader keeps their order)."""
    if cfg.workers < 1:
        while True:
            yield source.sample(cfg.batch_size)
    loader = torch.utils.data.DataLoader(
        _SourceBatches(make_source, cfg, start_step), batch_size=None,
        num_workers=cfg.workers, prefetch_factor=4, persistent_workers=True,
        multiprocessing_context="fork")  # fork: sources are built by closures
    try:
        yield from loader
    except InputError as err:  # a worker's error arrives with its whole traceback as message
        last = str(err).strip().splitlines()[-1]
        raise InputError(last.split("InputError: ", 1)[-1]) from None


def initial_weights(cfg: TrainConfig, net_cfg: NetConfig) -> tuple[NetConfig, dict | None]:
    """The network config and weights to start from: ``cfg.init``'s when given (its config
    wins over the preset: the weights only fit their own architecture)."""
    if not cfg.init:
        return net_cfg, None
    from .aligners.network import resolve_model_path

    state = load_checkpoint(resolve_model_path(cfg.init))  # "default": the shipped model
    # what the network is fed, the resolution its mask module works at and the symmetry its
    # angle is read with may change (the weights fit either); its architecture may not
    fed = {k: cfg.net[k] for k in ("input", "input_lowpass", "mask_stride", "symmetry")
           if k in cfg.net}
    init_cfg = NetConfig.from_dict({**state["net"], **fed})
    if (init_cfg.head == "rigid") != (cfg.objective == "stn"):
        raise InputError(f"has a '{init_cfg.head}' head, which does not fit objective "
                         f"'{cfg.objective}'", cfg.init)
    return init_cfg, state["model"]


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    log=print,
    make_source=None,
) -> dict:
    """Train (or resume) and write checkpoints to ``out``; returns the final checkpoint.

    ``make_source(cfg, seed_offset)`` builds the pair source (default: photographs of
    ``cfg.images``, train split); any object with ``sample(n) -> PairBatch``,
    ``sample_views(n, k)`` and numpy generators ``rng`` and ``noise_rng`` will do.

    Under ``torchrun`` every process runs this (:mod:`.distributed`): each trains on its share
    of every batch, rank 0 alone validates, writes checkpoints and calibrates, and the other
    ranks return ``{}``.
    """
    if cfg.objective not in OBJECTIVES:
        raise InputError(f"unknown objective '{cfg.objective}' (expected one of "
                         f"{', '.join(OBJECTIVES)})")
    out = check_writable(out)
    state = load_checkpoint(out) if resume and out.exists() else None
    if state is not None and "optimizer" not in state:
        raise InputError("is an exported model (no optimiser state): it cannot be resumed", out)
    if resume and state is None:
        log(f"{out} does not exist yet: starting a new run")
    if state is None and cfg.steps is None:
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "steps": 1000})
    if state is not None:
        # the saved config, except a step budget or a time budget given for this call
        # (``steps=None`` keeps the saved step budget; ``minutes``, ``device`` and
        # ``workers`` are for this call)
        saved = state["train"]
        cfg = TrainConfig.from_dict({**saved, "steps": saved["steps"] if cfg.steps is None
                                     else cfg.steps, "minutes": cfg.minutes,
                                     "device": cfg.device, "workers": cfg.workers})
    make_source = make_source or default_sources(cfg)
    net_cfg = preset(cfg.preset, **cfg.net)
    if cfg.objective == "stn":
        net_cfg.head = "rigid"
        if net_cfg.input != "image":
            raise InputError("the STN baseline warps images: it needs image input")
    net_cfg, start_weights = initial_weights(cfg, net_cfg) if state is None else (net_cfg, None)
    if state is not None:
        net_cfg = NetConfig.from_dict(state["net"])
    device = checked_device(cfg.device)
    ranks = distributed.start(cfg.device)
    distributed.check_batch(ranks, cfg.batch_size)
    if device.type == "cuda" and ranks.active:
        device = torch.device("cuda", ranks.local_rank)
    progress = progress and ranks.main
    torch.manual_seed(cfg.seed)
    model = AlignNet(net_cfg)
    if start_weights is not None:
        model.load_state_dict(start_weights)
    to_device(model, device)
    trainee = distributed.wrap(model, ranks, device)  # what the steps run through
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    source = make_source(cfg, 0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    step, history, elapsed_before = 0, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, history = state["step"], state["history"]
        elapsed_before = state.get("train_seconds", 0.0)
        source.rng.bit_generator.state = state["rng"]["pairs"]
        source.noise_rng.bit_generator.state = state["rng"]["noise"]
        gen.set_state(state["rng"]["torch"])
        log(f"resuming {out} at step {step}")

    # a fixed validation set from *training* photographs at other places (test stays unseen)
    val_batch = make_source(cfg, VALIDATION).sample(cfg.val_pairs)
    mask = input_mask(net_cfg.size, device)
    val = {"a": model_input(net_cfg, torch.from_numpy(val_batch.a).to(device), mask),
           "b": model_input(net_cfg, torch.from_numpy(val_batch.b).to(device), mask),
           "angle": val_batch.angle}

    def snapshot() -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "net": net_cfg.to_dict(), "train": cfg.to_dict(),
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "step": step, "history": history,
            "train_seconds": elapsed_before + (time.time() - start),
            "rng": {"pairs": source.rng.bit_generator.state,
                    "noise": source.noise_rng.bit_generator.state, "torch": gen.get_state()},
            "offset": None,
        }

    start = last_save = time.time()
    deadline = start + cfg.minutes * 60 if cfg.minutes else None
    total = None if deadline else cfg.steps
    shift_scale = net_cfg.size / 8.0
    factor = net_cfg.angle_factor  # spectra: the head works on the doubled circle
    model.train()
    running = None
    bar = tqdm(total=total, initial=step if total else 0, desc=f"train {cfg.objective}",
               unit="step", disable=not progress)
    rows = ranks.rows(cfg.batch_size)  # this process's share of each batch
    batches = batch_stream(make_source, cfg, source, step)
    while True:
        over = step >= cfg.steps if deadline is None else time.time() >= deadline
        if distributed.agree(ranks, over)[0]:  # every process stops at the same step
            break
        batch = next(batches)
        # impulses repaired before any turn smears them (model_input repairs what it is given)
        a = repair_impulses(torch.from_numpy(batch.a[rows]).to(device))
        b = repair_impulses(torch.from_numpy(batch.b[rows]).to(device))
        if cfg.objective == "udl":
            (a1, b1), (a2, b2), target = udl_batch(a, b, cfg.disturb_shift, gen, rows,
                                                   cfg.batch_size, cfg.split_views)
            prep = [model_input(net_cfg, x, mask) for x in (a1, b1, a2, b2)]
            outs = trainee(torch.cat([prep[0], prep[2]]), torch.cat([prep[1], prep[3]]))
            out_a, out_b = outs.chunk(2)
            loss = udl_loss(out_a, out_b, target * factor, net_cfg.head)
        elif cfg.objective == "supervised":
            pa, pb = model_input(net_cfg, a, mask), model_input(net_cfg, b, mask)
            angle = torch.from_numpy(batch.angle[rows]).float().to(device) * factor
            loss = supervised_loss(trainee(pa, pb), angle, net_cfg.head)
        else:
            pa, pb = model_input(net_cfg, a, mask), model_input(net_cfg, b, mask)
            loss = stn_loss(trainee(pa, pb), pa, pb, mask, shift_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.update(1)
        if step % cfg.val_every == 0 and ranks.main:
            entry = {"step": step, "loss": running,
                     "seconds": elapsed_before + time.time() - start}
            if np.isfinite(val["angle"]).all():  # pairs files may come without truth
                mean_err, median_err, _ = validation_error(model, val)
                entry.update(val_mean_deg=mean_err, val_median_deg=median_err)
            history.append(entry)
            shown = {k.replace("_deg", ""): f"{v:.1f}" for k, v in entry.items()
                     if k in ("loss", "val_mean_deg", "val_median_deg")}
            if deadline:  # a time budget has no step total, so the bar shows no ETA itself
                shown["left"] = f"{max(deadline - time.time(), 0) / 60:.1f}min"
            bar.set_postfix(shown)
        due = (time.time() - last_save > cfg.checkpoint_minutes * 60
               or bool(cfg.checkpoint_steps and step % cfg.checkpoint_steps == 0))
        if distributed.agree(ranks, due)[0]:
            if ranks.main:  # the ranks' weights and random states are the same
                save_checkpoint(out, snapshot())
            last_save = time.time()
    bar.close()
    batches.close()  # ends the pair-making processes, if any
    final = {}
    if ranks.main:
        final = snapshot()
        final.update(calibrate(model, cfg, make_source(cfg, CALIBRATION)))
        save_checkpoint(out, final)
    distributed.barrier(ranks)
    distributed.stop(ranks)
    return final


def calibrate(model: AlignNet, cfg: TrainConfig, source) -> dict:
    """What a trained model needs to align, from unlabelled view triples of training data:
    the offset C (label-free for UDL; zero for the objectives trained against true angles)
    and, for 2-vector heads, the confidence floor (see :func:`calibration.confidence_floor`).
    Returns checkpoint entries: ``offset``, ``offset_info``, ``confidence_floor``."""
    from .calibration import confidence_floor, offset_label_free

    views, _ = source.sample_views(cfg.calib_groups, 3)
    floor = (confidence_floor(model, views[:, 0], views[:, 1])
             if model.cfg.head != "scalar" else None)
    if cfg.objective != "udl":
        return {"offset": 0.0, "confidence_floor": floor,
                "offset_info": {"method": f"none ({cfg.objective} learns the angle itself)"}}
    info = offset_label_free(model, views)
    info["method"] = "label-free (antisymmetry + cycles)"
    return {"offset": info["offset"], "offset_info": info, "confidence_floor": floor}
