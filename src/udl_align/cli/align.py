"""Estimate the transform taking a[i] onto b[i] for every pair of a pairs file."""

from __future__ import annotations

import argparse

import numpy as np

from ..aligners import CLASSICAL, make_aligner, run_aligner
from ..aligners.network import NetworkAligner
from ..errors import InputError
from ..io import check_writable, read_pairs, write_estimates


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", required=True, help="pairs file (.npz)")
    parser.add_argument("--out", required=True, help="estimates to write (.csv)")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--model", help="checkpoint from udl-align train, or 'default' (the "
                     "shipped natural-image model)")
    how.add_argument("--method", choices=sorted(CLASSICAL), help="classical aligner")
    parser.add_argument("--refine", action="store_true",
                        help="with --model: narrow exhaustive search around the network's angle")
    parser.add_argument("--refine-span", type=float, default=15.0,
                        help="half width of the --refine search around the network's angle, "
                        "degrees (default 15)")
    parser.add_argument("--confidence-floor", type=float, default=None,
                        help="with --refine: pairs whose network confidence (output length) "
                        "is below this get the whole-circle search (default: the model's, "
                        "set at training; 0 turns it off)")
    parser.add_argument("--max-shift", type=float, default=None,
                        help="largest shift searched, px (default: the pairs file's max_shift, "
                        "else N/8)")
    parser.add_argument("--lowpass", type=float, default=0.25,
                        help="Gaussian pre-filter sigma as a fraction of Nyquist; 0 turns it "
                        "off (default 0.25)")
    parser.add_argument("--angle-step", type=float, default=1.0,
                        help="bruteforce angle grid, degrees (default 1)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def aligner_options(args: argparse.Namespace, max_shift: float | None) -> dict:
    if args.lowpass is not None and args.lowpass < 0:
        raise InputError(f"--lowpass must be >= 0, got {args.lowpass}")
    options = {"max_shift": max_shift, "lowpass": args.lowpass or None, "device": args.device}
    if args.model:
        options.update(refine=args.refine, refine_span=args.refine_span,
                       confidence_floor=args.confidence_floor)
    elif args.method == "bruteforce":
        if not 0 < args.angle_step <= 30:
            raise InputError(f"--angle-step must be in (0, 30], got {args.angle_step}")
        options["angle_step"] = args.angle_step
    return options


def main(args: argparse.Namespace) -> int:
    if args.refine and not args.model:
        raise InputError("--refine refines a network's angle: use it with --model")
    check_writable(args.out)
    pairs = read_pairs(args.pairs)
    max_shift = args.max_shift if args.max_shift is not None else pairs.meta.get("max_shift")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda asked for, but no CUDA device is available")
    if args.model:
        aligner = NetworkAligner.from_checkpoint(args.model, **aligner_options(args, max_shift))
    else:
        aligner = make_aligner(args.method, **aligner_options(args, max_shift))
    est, seconds = run_aligner(aligner, pairs.a, pairs.b, batch_size=args.batch_size,
                               progress=not args.quiet, desc=f"align {aligner.name}")
    write_estimates(args.out, est.angle, est.tx, est.ty,
                    extra={"score": est.score, "seconds": seconds})
    print(f"aligned {pairs.n} pairs with {aligner.name} at {pairs.n / np.sum(seconds):.1f} "
          f"pairs/s; wrote {args.out}")
    return 0
