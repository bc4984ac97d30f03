"""Train a network (UDL, supervised or STN baseline) on pairs made from your photographs, a
pairs file, or the particles of a stack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from udl_align.aligners import BruteForce, make_aligner
from udl_align.aligners.network import untrusted
from udl_align.data import stacks
from udl_align.errors import InputError
from udl_align.io.files import check_writable
from udl_align.io.mrc import write_mrc
from udl_align.network.models import INPUTS, PRESETS, NetConfig
from udl_align.pipelines.reference_free import reference_free
from udl_align.training.config import (
    LR_FLOOR,
    LR_SCHEDULES,
    OBJECTIVES,
    OTHER_DEFAULTS,
    PARTICLE_DEFAULTS,
    TrainConfig,
    field_default,
    is_particle_data,
    with_reference_symmetry,
)
from udl_align.training.log import history_paths
from udl_align.training.loop import train

#: the flags that set a TrainConfig field (flag's dest: field); a flag not given leaves the
#: field to TrainConfig.for_data (the data's default, or the field's)
FIELDS = {"objective": "objective", "preset": "preset", "noise": "noise", "steps": "steps",
          "minutes": "minutes", "batch_size": "batch_size", "lr": "lr",
          "lr_schedule": "lr_schedule", "lr_hold": "lr_hold", "lr_step": "lr_step",
          "lr_gamma": "lr_gamma", "seed": "seed", "val_every": "val_every",
          "checkpoint_every": "checkpoint_steps", "init": "init",
          "disturb_shift": "disturb_shift", "reference": "reference", "group_by": "group_by",
          "device": "device", "workers": "workers", "search_particles": "search_particles",
          "augment_noise": "augment_noise", "augment_shift": "augment_shift", "ema": "ema"}


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"


def _g(value: float) -> str:
    return f"{value:g}"


def _by_data(name: str, show=str) -> str:
    """The defaults of setting ``name`` for particle stacks and for other data, for a help."""
    return (f"{show(PARTICLE_DEFAULTS[name])} for particle stacks, "
            f"{show(OTHER_DEFAULTS[name])} otherwise")


def add_args(parser: argparse.ArgumentParser) -> None:
    d = field_default
    parser.add_argument("--data", required=True,
                        help="folder of photographs (new pairs are generated from its train "
                        "split at every step), a pairs .npz (udl-align synth natural), or a "
                        "particle stack .mrcs / STAR (pairs of different particles)")
    parser.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help=f"network size. Default: {d('preset')}")
    parser.add_argument("--objective", default=None, choices=OBJECTIVES,
                        help="udl learns without labels, supervised from true angles, stn "
                        "is the STN baseline, search learns the exhaustive search's poses of "
                        "a particle stack against its reference (no labels; the search is the "
                        f"teacher). Default: {_by_data('objective')}")
    parser.add_argument("--search-particles", type=int, default=None,
                        help="objective search: how many training particles the exhaustive "
                        f"search aligns (default {d('search_particles')})")
    parser.add_argument("--turn-augment", choices=("on", "off"), default=None,
                        help="supervised and search: turn the second image of every pair by a "
                        "random angle (the target with it), so a finite stack is not learned "
                        f"by heart. Default: {_by_data('turn_augment', _on_off)}")
    parser.add_argument("--augment-noise", type=float, default=None,
                        help="supervised and search: add fresh Gaussian noise to the second "
                        "image of every pair, its standard deviation this fraction of the "
                        f"image's. Default: {_by_data('augment_noise', _g)}")
    parser.add_argument("--augment-shift", type=float, default=None,
                        help="supervised and search: shift the second image of every pair by up "
                        f"to this many pixels. Default: {_by_data('augment_shift', _g)}")
    parser.add_argument("--ema", type=float, default=None,
                        help="decay of a moving average of the weights that the checkpoints "
                        f"keep to align with (0: the last step's). Default: {_by_data('ema', _g)}")
    parser.add_argument("--test-turns", type=int, default=None, choices=(1, 2, 4),
                        help="how the trained network aligns: the circular mean of its answers "
                        "for the particle and its quarter turns (1: one answer; align "
                        f"--test-turns overrides it). Default: {_by_data('test_turns')}")
    parser.add_argument("--input", default=None, choices=INPUTS,
                        help="what the network sees: the image, or log(1 + |FFT|) (angle "
                        "modulo 180, half turn by correlation; under UDL it did not start "
                        "learning, on particles or photographs). Default: "
                        f"{PARTICLE_DEFAULTS['input']}")
    parser.add_argument("--disturb-shift", type=float, default=None,
                        help="largest shift (px) of UDL's disturbances. Default: "
                        f"{PARTICLE_DEFAULTS['disturb_shift']:g} for particle stacks (rotation "
                        "only: a shifted frame's border enters the network's mask and gives the "
                        f"disturbance away), {OTHER_DEFAULTS['disturb_shift']:g} otherwise")
    parser.add_argument("--input-lowpass", type=float, default=None,
                        help="Gaussian low-pass of the network's input, sigma as a fraction of "
                        f"its Nyquist. Default: {PARTICLE_DEFAULTS['input_lowpass']:g} for "
                        "particle stacks (interpolation patterns in noise give UDL's "
                        "disturbances away at SNR 0.1), "
                        f"{OTHER_DEFAULTS['input_lowpass']:g} otherwise")
    parser.add_argument("--split-views", choices=("on", "off"), default=None,
                        help="make UDL's two disturbed copies from the even and the odd pixels, "
                        f"so they share no noise. Default: {_by_data('split_views', _on_off)}")
    parser.add_argument("--symmetry", type=int, default=None,
                        help="in-plane symmetry order n of the particle (C_n; e.g. 2 for "
                        "GroEL's side views): the network learns the angle modulo 360/n and "
                        f"align picks among the n turns by correlation. Default: "
                        f"{NetConfig.symmetry}")
    parser.add_argument("--reference", default=None,
                        help="particle stacks: train on (reference, particle) pairs, the pairs "
                        "align --stack --reference sees (a class average or a projection)")
    parser.add_argument("--group-by", default=None,
                        help="particle STAR column (e.g. rlnClassNumber): pair particles only "
                        "within its groups")
    parser.add_argument("--noise", default=None,
                        help="noise of the training pairs: a condition, a comma list, or mix "
                        f"(the seven conditions of Table 1). Default: {d('noise')}")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None,
                        help=f"number of steps (default {d('steps')})")
    budget.add_argument("--minutes", type=float, default=None, help="train for this long")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"pairs per step (default {d('batch_size')})")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"Adam's learning rate (default {d('lr'):g})")
    parser.add_argument("--lr-schedule", default=None, choices=LR_SCHEDULES,
                        help="step: the paper's (x --lr-gamma every --lr-step steps); cosine: "
                        "--lr for the first --lr-hold of the budget (--minutes, else --steps), "
                        f"then down along a half cosine to {LR_FLOOR:g} x --lr at its end. "
                        f"Default: {_by_data('lr_schedule')}")
    parser.add_argument("--lr-hold", type=float, default=None,
                        help="cosine schedule: the share of the budget at the full rate "
                        f"(default {d('lr_hold'):g})")
    parser.add_argument("--lr-step", type=int, default=None,
                        help="step schedule: multiply the learning rate by --lr-gamma every "
                        f"this many steps (default {d('lr_step')}, the paper's)")
    parser.add_argument("--lr-gamma", type=float, default=None,
                        help="factor of the learning rate at every --lr-step steps "
                        f"(default {d('lr_gamma'):g})")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the initial weights, the pairs and UDL's disturbances "
                        f"(default {d('seed')})")
    parser.add_argument("--val-every", type=int, default=None,
                        help=f"steps between validation errors on held pairs (default "
                        f"{d('val_every')})")
    parser.add_argument("--init", default=None,
                        help="start from this checkpoint's weights (fine-tuning; its network "
                        "config replaces --preset); 'default' is the shipped natural-image "
                        "model, 'none' random weights. Default: "
                        f"'{PARTICLE_DEFAULTS['init']}' for UDL on particle stacks with the cpu "
                        "preset (from random weights UDL stays at a constant output on "
                        "particles), none otherwise")
    parser.add_argument("--residual-stage", default=None, metavar="C1[,C2...]",
                        help="with --init: add a residual stage (conv blocks of these widths) "
                        "to the starting model and train it alone, the rest frozen (the "
                        "shipped model's: --residual-stage 32,32 --lr 1e-3 --lr-schedule "
                        "cosine --lr-hold 0.5 --ema 0.999). Fine-tuning a model that has one "
                        "without this flag starts from the model without it")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="also write a checkpoint every this many steps (default: every "
                        f"{d('checkpoint_minutes'):g} minutes only)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (its saved config is used)")
    parser.add_argument("--calibrate-with", default=None,
                        help="pairs .npz with truth: set the offset C from these labelled pairs "
                        "(the paper's way) instead of the label-free estimate")
    parser.add_argument("--device", default=None,
                        help=f"cpu or cuda: where the network trains (default {d('device')})")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"processes that make training pairs (default {d('workers')}: in "
                        "this process, reproducible to the pair; on a GPU one process cannot "
                        "keep up)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config(args: argparse.Namespace) -> TrainConfig:
    """The training config of the flags given; TrainConfig.for_data fills in the rest."""
    given = {name: getattr(args, dest) for dest, name in FIELDS.items()
             if getattr(args, dest) is not None}
    if args.split_views is not None:
        given["split_views"] = args.split_views == "on"
    if args.turn_augment is not None:
        given["turn_augment"] = args.turn_augment == "on"
    net = {k: getattr(args, k) for k in ("input", "input_lowpass", "symmetry", "test_turns")
           if getattr(args, k) is not None}
    if args.residual_stage:
        net.update(residual_stage(args.residual_stage, args.init))
    return TrainConfig.for_data(args.data, resume=args.resume, net=net, **given)


def residual_stage(widths: str, init: str | None) -> dict:
    """The network settings of ``--residual-stage``: a stage of conv blocks of ``widths``
    ("32,32") trained alone on top of the ``--init`` model (training reads the offset C it
    turns back by from that model)."""
    try:
        channels = tuple(int(w) for w in widths.split(","))
    except ValueError:
        channels = ()
    if not channels or min(channels) < 1:
        raise InputError(f"--residual-stage takes conv widths such as 32,32, got '{widths}'")
    if not init or init == "none":
        raise InputError("--residual-stage trains a stage on top of a trained model: give "
                         "--init")
    return {"residual": channels, "residual_only": True}


def check(args: argparse.Namespace, cfg: TrainConfig) -> None:
    """Refuse values out of range and flags that do not go together, naming the flags."""
    if cfg.steps is not None and cfg.steps < 1:
        raise InputError(f"--steps must be at least 1, got {cfg.steps}")
    if cfg.minutes is not None and cfg.minutes <= 0:
        raise InputError(f"--minutes must be positive, got {cfg.minutes}")
    if cfg.lr_step < 1 or not 0 < cfg.lr_gamma <= 1:
        raise InputError("--lr-step must be at least 1 and --lr-gamma in (0, 1]")
    if not 0 <= cfg.lr_hold < 1:
        raise InputError(f"--lr-hold must be in [0, 1), got {cfg.lr_hold}")
    if cfg.val_every < 1:
        raise InputError(f"--val-every must be at least 1, got {cfg.val_every}")
    if cfg.checkpoint_steps < 0:
        raise InputError(f"--checkpoint-every must be >= 0, got {cfg.checkpoint_steps}")
    symmetry = NetConfig.symmetry if args.symmetry is None else args.symmetry
    if symmetry < 1:
        raise InputError(f"--symmetry must be at least 1, got {symmetry}")
    if symmetry > 1 and cfg.objective == "stn":
        raise InputError("--symmetry needs an angle head: not with --objective stn")
    if cfg.workers < 0:
        raise InputError(f"--workers must be >= 0, got {cfg.workers}")
    if args.init and args.resume:
        raise InputError("--init starts a new run; --resume continues one: give only one")
    if cfg.reference and not is_particle_data(cfg.images):
        raise InputError("--reference pairs the particles of a stack or STAR given as --data")
    if cfg.group_by and not is_particle_data(cfg.images):
        raise InputError("--group-by groups the particles of a stack or STAR given as --data")
    if cfg.search_particles < 1:
        raise InputError(f"--search-particles must be at least 1, got {cfg.search_particles}")
    if cfg.disturb_shift < 0:
        raise InputError(f"--disturb-shift must be >= 0, got {cfg.disturb_shift}")


def summary(state: dict, out: str) -> str:
    """Lines on the finished run: steps, time, offset C and how it was found, the last
    validation, the trust check (and a warning when it fails) and the files written."""
    validated = [e for e in state["history"] if "val_mean_deg" in e]
    last = {k: round(v, 2) if isinstance(v, float) else v
            for k, v in (validated[-1] if validated else {}).items()}
    info = state["offset_info"]
    closed = "" if "cycles_within_15deg" not in info else (
        f"; {info['cycles_within_15deg']:.0%} of unlabelled 3-cycles close within 15 deg, "
        f"output resultant {info['output_resultant']:.2f} (near 1: collapsed)")
    trust = state.get("trust") or {}
    lines = [f"trained {state['step']} steps in {state['train_seconds'] / 60:.1f} min; "
             f"offset C = {state['offset']:.2f} deg ({info['method']}{closed}); "
             f"last validation: {json.dumps(last)}"]
    if trust:
        lines.append(f"trust check: the network's angle is within {trust['tolerance_deg']:g} "
                     f"deg of the exhaustive search's on {trust['agreement']:.0%} of "
                     f"{trust['pairs']} unlabelled pairs (chance {trust['chance']:.0%}; median "
                     f"difference {trust['median_difference_deg']:.1f} deg)")
        if trust.get("turn_agreement") is not None:
            known = (f"it knows the angle modulo {trust['period_deg']:g} deg"
                     if trust.get("half_turn_share") is None else
                     f"its angle is half a turn off on {trust['half_turn_share']:.0%} of them, "
                     "so align checks each turn")
            lines.append(f"trust check: {known}; with the turn picked by correlation it "
                         f"agrees on the full circle on {trust['turn_agreement']:.0%}")
        if trust.get("turn_lowpass") is not None:
            seen = ", ".join(f"{k}: {v:.2f}" for k, v in trust["turn_separation"].items())
            lines.append(f"trust check: align's full-resolution stages (turns, polish) see "
                         f"the images through the pre-filter {trust['turn_lowpass']:g} (0: "
                         f"none; turn separation by filter {seen})")
    reason = untrusted(info, trust)
    if reason:
        lines.append(f"udl-align train: warning: {out}: {reason}: it did not learn; align "
                     "--refine will search the whole circle with it")
    csv_path, png_path = history_paths(out)
    lines.append(f"wrote {out}, {csv_path} and {png_path}")
    return "\n".join(lines)


def report(state: dict, out: str) -> None:
    """Print :func:`summary`: its warning on stderr, the rest on stdout."""
    for line in summary(state, out).splitlines():
        print(line, file=sys.stderr if "warning:" in line else sys.stdout)


def reference_for_search(cfg: TrainConfig, out: str, quiet: bool) -> TrainConfig:
    """``cfg`` with a reference for the ``search`` objective: the one given, or a
    reference-free average of the stack (``bruteforce``, as ``align --stack`` without a
    reference makes it), written beside the checkpoint as ``OUT_reference.mrc`` so that
    ``align --stack --reference`` can use the same one."""
    if cfg.objective != "search" or cfg.reference or not is_particle_data(cfg.images):
        return cfg
    stem = Path(out).with_suffix("") if Path(out).suffix else Path(out)
    path = check_writable(Path(f"{stem}_reference.mrc"))
    particles = stacks.open_particles(cfg.images)
    print(f"no --reference: making one from the stack (reference-free, bruteforce); it is "
          f"written to {path}")
    image, _ = reference_free(particles, make_aligner("bruteforce"), BruteForce.batch_size,
                              progress=not quiet, log=print)
    write_mrc(path, image, particles.pixel_size or 1.0, stack=False)
    return TrainConfig.from_dict({**cfg.to_dict(), "reference": str(path)})


def prepared(cfg: TrainConfig, out: str, quiet: bool) -> TrainConfig:
    """A new run's config with what the data decides: the reference of the search objective
    (:func:`reference_for_search`), and the symmetry it suggests
    (:func:`~udl_align.training.config.with_reference_symmetry`), said in one line."""
    cfg = reference_for_search(cfg, out, quiet)
    cfg, similarity = with_reference_symmetry(cfg)
    if similarity is not None and cfg.net["symmetry"] > 1:
        print(f"the reference looks the same turned by 180 deg (best match {similarity:.2f}): "
              "the network learns the angle modulo 180 and align picks the turn by "
              "correlation (--symmetry 1 to learn the full circle)")
    return cfg


def main(args: argparse.Namespace) -> int:
    cfg = config(args)
    check(args, cfg)
    if not args.resume:
        cfg = prepared(cfg, args.out, args.quiet)
    state = train(cfg, args.out, resume=args.resume, progress=not args.quiet,
                  calibrate_with=args.calibrate_with)
    if state:  # empty on the ranks other than 0 under torchrun: rank 0 writes and reports
        report(state, args.out)
    return 0
