"""Make seeded synthetic pairs with known transforms (``synth natural``)."""

from __future__ import annotations

import argparse

from ..io import Pairs, check_writable, write_pairs
from ..synth import generate_natural_pairs


def add_args(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True, parser_class=type(parser))
    nat = kinds.add_parser(
        "natural",
        help="pairs from a folder of photographs (the paper's MS-COCO protocol)",
        description="Pairs from photographs: angle uniform in [0, 360), integer shift in "
        "[-max_shift, max_shift], the second patch cut from the rotated, shifted whole image.",
    )
    nat.add_argument("--images", required=True, help="folder of PNG/JPEG/TIFF photographs")
    nat.add_argument("--out", required=True, help="pairs file to write (.npz)")
    nat.add_argument("--n", type=int, default=1000, help="number of pairs (default 1000)")
    nat.add_argument("--size", type=int, default=128, help="patch size in pixels (default 128)")
    nat.add_argument("--noise", default="clean",
                     help="clean | gaussian:SNR | saltpepper:P (default clean)")
    nat.add_argument("--max-shift", type=int, default=10, help="largest shift in px (default 10)")
    nat.add_argument("--seed", type=int, default=0)
    nat.add_argument("--split", default="all", choices=("all", "train", "test"),
                     help="photographs to use, split by file-name hash (default all)")
    nat.add_argument("--test-percent", type=float, default=20.0,
                     help="share of photographs in the test split (default 20)")
    nat.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    check_writable(args.out)
    batch, meta = generate_natural_pairs(
        args.images,
        n=args.n,
        size=args.size,
        noise=args.noise,
        max_shift=args.max_shift,
        seed=args.seed,
        split=args.split,
        test_percent=args.test_percent,
        progress=not args.quiet,
    )
    pairs = Pairs(a=batch.a, b=batch.b, angle=batch.angle, tx=batch.tx, ty=batch.ty, meta=meta)
    write_pairs(args.out, pairs)
    print(f"wrote {pairs.n} pairs of {pairs.size} px ({meta['noise']}) to {args.out}")
    return 0
