"""Align pairs (the transform taking a[i] onto b[i]) or every particle of a stack to a
reference (RELION STAR, aligned stack and average out)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from udl_align.aligners import CLASSICAL, make_aligner, run_aligner
from udl_align.aligners.network import RESIDUAL_STEPS_MAX
from udl_align.cli.train import prepared, report
from udl_align.data import stacks
from udl_align.errors import InputError
from udl_align.io.files import check_out_dir, check_writable
from udl_align.io.pairs import read_pairs, write_estimates
from udl_align.pipelines import stack_align
from udl_align.pipelines.stack_align import StackAlignOptions
from udl_align.training.config import TrainConfig
from udl_align.training.loop import train


def add_args(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--pairs", help="pairs file (.npz); writes --out")
    what.add_argument("--stack", help="particles: an MRC stack (.mrcs/.mrc), a RELION STAR "
                      "file or a cryoSPARC .cs file naming stacks; aligned to --reference, "
                      "outputs in --out-dir")
    parser.add_argument("--out", help="with --pairs: estimates to write (.csv)")
    parser.add_argument("--reference", help="with --stack: the reference image (MRC or PNG), "
                        "the particles' size; without it, one is made from the stack "
                        "(reference-free: seed from a random subset, then align-and-average "
                        "rounds)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="reference-free: at most this many align-and-average rounds "
                        "(default 5; stops early when the angles settle)")
    parser.add_argument("--out-dir", help="with --stack: where particles.star, aligned.mrcs, "
                        "average.mrc and average.png go")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--model", help="checkpoint from udl-align train, or 'default' (the "
                     "shipped natural-image model)")
    how.add_argument("--method", choices=sorted(CLASSICAL), help="classical aligner")
    how.add_argument("--train-minutes", type=float, default=None,
                     help="with --stack: first train a network on this stack for this many "
                     "minutes (udl-align train's default particle recipe, no labels; written "
                     "to OUT_DIR/model.pt with its log), then align the stack with it and "
                     "--refine: the transductive workflow in one command")
    parser.add_argument("--refine", action="store_true",
                        help="with --model: narrow exhaustive search around the network's angle")
    parser.add_argument("--refine-span", type=float, default=15.0,
                        help="half width of the --refine search around the network's angle, "
                        "degrees (default 15)")
    parser.add_argument("--confidence-floor", type=float, default=None,
                        help="with --refine: pairs whose network confidence (output length) "
                        "is below this get the whole-circle search (default: the model's; 0, "
                        "none, for models trained by this version and the shipped one)")
    parser.add_argument("--test-turns", type=int, default=None, choices=(1, 2, 4),
                        help="with --model: the network's angle is the circular mean of its "
                        "answers for each image and its quarter turns (cost: that many "
                        "passes; default: the model's, set at training)")
    parser.add_argument("--residual-steps", type=int, default=None,
                        choices=range(RESIDUAL_STEPS_MAX + 1),
                        metavar=f"{{0,...,{RESIDUAL_STEPS_MAX}}}",
                        help="with --model: how many times a model's residual stage corrects "
                        "the network's angle (0: the network's head alone; default: the "
                        "model's, 2 for the shipped one; 0 with --refine)")
    parser.add_argument("--max-shift", type=float, default=None,
                        help="largest shift searched, px (default: the pairs file's max_shift, "
                        "else N/8)")
    parser.add_argument("--lowpass", type=float, default=0.25,
                        help="Gaussian pre-filter sigma as a fraction of Nyquist; 0 turns it "
                        "off (default 0.25)")
    parser.add_argument("--angle-step", type=float, default=1.0,
                        help="bruteforce angle grid, degrees (default 1)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="pairs or particles per batch (default: the method's own, 64 for "
                        "a network, 16 for the classical methods)")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="--stack: threads reading particles ahead of the alignment "
                        "(default 0: read in turn)")
    parser.add_argument("--resume", action="store_true",
                        help="--stack: go on from where a killed run into the same --out-dir "
                        "stopped (its progress is saved every minute)")
    parser.add_argument("--save-every", type=int, default=0,
                        help="--stack: also save progress every this many batches")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def aligner_options(args: argparse.Namespace, max_shift: float | None) -> dict:
    if args.lowpass is not None and args.lowpass < 0:
        raise InputError(f"--lowpass must be >= 0, got {args.lowpass}")
    options = {"max_shift": max_shift, "lowpass": args.lowpass or None, "device": args.device}
    if args.model:
        options.update(refine=args.refine, refine_span=args.refine_span,
                       confidence_floor=args.confidence_floor, test_turns=args.test_turns,
                       residual_steps=args.residual_steps)
    elif args.method == "bruteforce":
        if not 0 < args.angle_step <= 30:
            raise InputError(f"--angle-step must be in (0, 30], got {args.angle_step}")
        options["angle_step"] = args.angle_step
    return options


def make(args: argparse.Namespace, max_shift: float | None):
    if args.model:
        aligner = make_aligner("network", model=args.model,
                               **aligner_options(args, max_shift))
        if aligner.distrust:
            print(f"udl-align align: warning: {args.model}: {aligner.distrust_message()}",
                  file=sys.stderr)
        return aligner
    return make_aligner(args.method, **aligner_options(args, max_shift))


def main(args: argparse.Namespace) -> int:
    if args.refine and not (args.model or args.train_minutes is not None):
        raise InputError("--refine refines a network's angle: use it with --model")
    if args.save_every < 0:
        raise InputError(f"--save-every must be >= 0, got {args.save_every}")
    if args.num_workers < 0:
        raise InputError(f"--num-workers must be >= 0, got {args.num_workers}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_shift is not None and not 0 <= args.max_shift < float("inf"):
        raise InputError(f"--max-shift must be >= 0, got {args.max_shift}")
    return align_particles(args) if args.stack else align_pairs(args)


def align_particles(args: argparse.Namespace) -> int:
    if not args.out_dir:
        raise InputError("--stack needs --out-dir")
    if args.out:
        raise InputError("--out is for --pairs; --stack writes its outputs into --out-dir")
    if args.rounds < 1:
        raise InputError(f"--rounds must be at least 1, got {args.rounds}")
    check_out_dir(args.out_dir)  # before any work: none is wasted on outputs that cannot be saved
    particles = stacks.open_particles(args.stack)
    if args.train_minutes is not None:
        args.model, args.reference = train_on_stack(args)
        args.refine = True
    aligner = make(args, args.max_shift)
    options = StackAlignOptions(batch_size=args.batch_size or aligner.batch_size,
                                workers=args.num_workers, progress=not args.quiet,
                                resume=args.resume, save_every=args.save_every,
                                rounds=args.rounds)
    summary = stack_align.align_particles(
        particles, aligner, args.out_dir, args.reference or None, options,
        warn=lambda message: print(f"udl-align align: warning: {args.model}: {message}",
                                   file=sys.stderr))
    if not summary:  # not rank 0: rank 0 merges and reports
        return 0
    print(f"aligned {summary['aligned']} of {summary['particles']} particles with "
          f"{aligner.name} at {summary['particles_per_s']:.1f} particles/s (mean correntropy "
          f"{summary['mean_correntropy']:.3f}); wrote particles.star, aligned.mrcs, "
          f"average.mrc and average.png to {args.out_dir}")
    return 0


def train_on_stack(args: argparse.Namespace) -> tuple[str, str]:
    """``align --train-minutes``: a network trained on ``args.stack`` with the default particle
    recipe, to ``OUT_DIR/model.pt`` (the reference made from the stack, if none is given, to
    ``OUT_DIR/model_reference.mrc``). Returns the model's and the reference's paths."""
    if args.train_minutes <= 0:
        raise InputError(f"--train-minutes must be positive, got {args.train_minutes}")
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)  # checked: it can be made
    out = Path(args.out_dir) / "model.pt"
    cfg = TrainConfig.for_data(args.stack, minutes=args.train_minutes, device=args.device,
                               **({"reference": args.reference} if args.reference else {}))
    cfg = prepared(cfg, str(out), args.quiet)
    report(train(cfg, out, progress=not args.quiet), str(out))
    return str(out), cfg.reference


def align_pairs(args: argparse.Namespace) -> int:
    if not args.out:
        raise InputError("--pairs needs --out")
    if args.train_minutes is not None:
        raise InputError("--train-minutes trains on a particle stack: use it with --stack")
    for given, name in ((args.out_dir, "--out-dir"), (args.reference, "--reference")):
        if given:  # silently ignored, it would look as if it had been used
            raise InputError(f"{name} is for --stack; --pairs writes its estimates to --out")
    check_writable(args.out)
    pairs = read_pairs(args.pairs)
    max_shift = args.max_shift if args.max_shift is not None else pairs.meta.get("max_shift")
    aligner = make(args, max_shift)
    if args.model and pairs.n >= 2:  # the trust check on a sample of these pairs
        aligner.check_trust(pairs.a, pairs.b, warn=lambda message: print(
            f"udl-align align: warning: {args.model}: {message}", file=sys.stderr))
    est, seconds = run_aligner(aligner, pairs.a, pairs.b, batch_size=args.batch_size,
                               progress=not args.quiet, desc=f"align {aligner.name}")
    write_estimates(args.out, est.angle, est.tx, est.ty,
                    extra={"score": est.score, "seconds": seconds})
    print(f"aligned {pairs.n} pairs with {aligner.name} at {pairs.n / np.sum(seconds):.1f} "
          f"pairs/s; wrote {args.out}")
    return 0
