"""Train a network (UDL, supervised or STN baseline) on pairs made from your photographs, a
pairs file, or the particles of a stack."""

from __future__ import annotations

import argparse
import json

from udl_align.errors import InputError
from udl_align.io.pairs import read_pairs
from udl_align.network.calibration import offset_labelled
from udl_align.network.checkpoint import model_from_checkpoint, save_checkpoint
from udl_align.network.models import INPUTS, PRESETS
from udl_align.training.config import (
    OBJECTIVES,
    PARTICLE_DEFAULTS,
    TrainConfig,
    data_defaults,
    is_particle_data,
)
from udl_align.training.loop import train


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="folder of photographs (new pairs are generated from its train "
                        "split at every step), a pairs .npz (udl-align synth natural), or a "
                        "particle stack .mrcs / STAR (pairs of different particles)")
    parser.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--objective", default="udl", choices=OBJECTIVES)
    parser.add_argument("--input", default=None, choices=INPUTS,
                        help="what the network sees: the image, or log(1 + |FFT|) (angle "
                        "modulo 180, half turn by correlation; under UDL it did not start "
                        "learning, on particles or photographs). Default: "
                        f"{PARTICLE_DEFAULTS['input']}")
    parser.add_argument("--disturb-shift", type=float, default=None,
                        help="largest shift (px) of UDL's disturbances. Default: 0 for particle "
                        "stacks (rotation only: a shifted frame's border enters the network's "
                        "mask and gives the disturbance away), 5 otherwise")
    parser.add_argument("--input-lowpass", type=float, default=None,
                        help="Gaussian low-pass of the network's input, sigma as a fraction of "
                        "its Nyquist. Default: 0.25 for particle stacks (interpolation "
                        "patterns in noise give UDL's disturbances away at SNR 0.1), 0 otherwise")
    parser.add_argument("--split-views", choices=("on", "off"), default=None,
                        help="make UDL's two disturbed copies from the even and the odd pixels, "
                        "so they share no noise. Default: on for particle stacks, off otherwise")
    parser.add_argument("--symmetry", type=int, default=1,
                        help="in-plane symmetry order n of the particle (C_n; e.g. 2 for "
                        "GroEL's side views): the network learns the angle modulo 360/n and "
                        "align picks among the n turns by correlation. Default: 1")
    parser.add_argument("--reference", default="",
                        help="particle stacks: train on (reference, particle) pairs, the pairs "
                        "align --stack --reference sees (a class average or a projection)")
    parser.add_argument("--group-by", default="",
                        help="particle STAR column (e.g. rlnClassNumber): pair particles only "
                        "within its groups")
    parser.add_argument("--noise", default="mix",
                        help="noise of the training pairs: a condition, a comma list, or mix "
                        "(the seven conditions of Table 1; default)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="number of steps (default 1000)")
    budget.add_argument("--minutes", type=float, default=None, help="train for this long")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--lr-step", type=int, default=12000,
                        help="multiply the learning rate by --lr-gamma every this many steps "
                        "(default 12000, the paper's)")
    parser.add_argument("--lr-gamma", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=int, default=100,
                        help="steps between validation errors on held pairs (default 100)")
    parser.add_argument("--init", default=None,
                        help="start from this checkpoint's weights (fine-tuning; its network "
                        "config replaces --preset); 'default' is the shipped natural-image "
                        "model, 'none' random weights. Default: 'default' for UDL on particle "
                        "stacks with the cpu preset (from random weights UDL stays at a "
                        "constant output on particles), none otherwise")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="also write a checkpoint every this many steps (default: every 3 "
                        "minutes only)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (its saved config is used)")
    parser.add_argument("--calibrate-with", default=None,
                        help="pairs .npz with truth: set the offset C from these labelled pairs "
                        "(the paper's way) instead of the label-free estimate")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default) or cuda: where the network trains")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes that make training pairs (default 0: in this process, "
                        "reproducible to the pair; on a GPU one process cannot keep up)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if args.minutes is not None and args.minutes <= 0:
        raise InputError(f"--minutes must be positive, got {args.minutes}")
    if args.lr_step < 1 or not 0 < args.lr_gamma <= 1:
        raise InputError("--lr-step must be at least 1 and --lr-gamma in (0, 1]")
    if args.val_every < 1:
        raise InputError(f"--val-every must be at least 1, got {args.val_every}")
    if args.checkpoint_every < 0:
        raise InputError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if args.symmetry < 1:
        raise InputError(f"--symmetry must be at least 1, got {args.symmetry}")
    if args.symmetry > 1 and args.objective == "stn":
        raise InputError("--symmetry needs an angle head: not with --objective stn")
    if args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    if args.init and args.resume:
        raise InputError("--init starts a new run; --resume continues one: give only one")
    if args.reference and not is_particle_data(args.data):
        raise InputError("--reference pairs the particles of a stack or STAR given as --data")
    if args.group_by and not is_particle_data(args.data):
        raise InputError("--group-by groups the particles of a stack or STAR given as --data")
    defaults = data_defaults(args.data)
    init = args.init
    if init is None:
        use_default = args.objective == "udl" and args.preset == "cpu" and not args.resume
        init = defaults["init"] if use_default else ""
    init = "" if init == "none" else init
    kind = args.input or defaults["input"]
    disturb_shift = defaults["disturb_shift"] if args.disturb_shift is None \
        else args.disturb_shift
    if disturb_shift < 0:
        raise InputError(f"--disturb-shift must be >= 0, got {disturb_shift}")
    # the input kind follows --init's model unless --input says otherwise; the low-pass
    # follows the data (it closes a shortcut that the data's noise opens)
    net = {"input_lowpass": defaults["input_lowpass"] if args.input_lowpass is None
           else args.input_lowpass}
    if args.input or not init:
        net["input"] = kind
    if args.symmetry > 1:
        net["symmetry"] = args.symmetry
    calib = read_pairs(args.calibrate_with) if args.calibrate_with else None
    if calib is not None and not calib.has_truth:
        raise InputError("has no truth to calibrate with", args.calibrate_with)
    cfg = TrainConfig(objective=args.objective, preset=args.preset, images=args.data,
                      init=init, noise=args.noise, batch_size=args.batch_size,
                      lr=args.lr, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
                      seed=args.seed, val_every=args.val_every, device=args.device,
                      workers=args.workers,
                      group_by=args.group_by, net=net, reference=args.reference,
                      checkpoint_steps=args.checkpoint_every, disturb_shift=disturb_shift,
                      split_views=defaults["split_views"] if args.split_views is None
                      else args.split_views == "on",
                      steps=args.steps if args.steps is not None
                      else (None if args.resume else 1000),
                      minutes=args.minutes)
    state = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    if not state:  # a rank other than 0 under torchrun: rank 0 writes and reports
        return 0
    if calib is not None:

        info = offset_labelled(model_from_checkpoint(state), calib.a, calib.b, calib.angle)
        info["method"] = f"labelled ({args.calibrate_with})"
        info["label_free"] = state["offset_info"]
        state["offset"], state["offset_info"] = info["offset"], info
        save_checkpoint(args.out, state)
    last = state["history"][-1] if state["history"] else {}
    info = state["offset_info"]
    closed = "" if "cycles_within_15deg" not in info else (
        f"; {info['cycles_within_15deg']:.0%} of unlabelled 3-cycles close within 15 deg, "
        f"output resultant {info['output_resultant']:.2f} (near 1: collapsed)")
    print(f"trained {state['step']} steps in {state['train_seconds'] / 60:.1f} min; "
          f"offset C = {state['offset']:.2f} deg ({state['offset_info']['method']}{closed}); "
          f"last validation: {json.dumps(last)}; wrote {args.out}")
    return 0

