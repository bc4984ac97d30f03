"""Score estimates against the truth stored in a pairs file (rotation and shift errors)."""

from __future__ import annotations

import argparse
import json

from udl_align.errors import InputError
from udl_align.io.files import atomic_output, check_writable
from udl_align.io.pairs import read_estimates, read_pairs
from udl_align.metrics import format_table, score


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", required=True, help="pairs file with truth (.npz)")
    parser.add_argument("--estimates", required=True, nargs="+",
                        help="one or more estimates files (.csv), one table row each")
    parser.add_argument("--json", default=None, help="also write the scores as JSON here")


def main(args: argparse.Namespace) -> int:
    if args.json:
        check_writable(args.json)
    pairs = read_pairs(args.pairs)
    if not pairs.has_truth:
        raise InputError("has no truth (angle/tx/ty) to evaluate against", args.pairs)
    rows = []
    for path in args.estimates:
        est = read_estimates(path, n=pairs.n)
        seconds = est["seconds"].to_numpy() if "seconds" in est else None
        rows.append((path, score(pairs.angle, pairs.tx, pairs.ty, est["angle"].to_numpy(),
                                 est["tx"].to_numpy(), est["ty"].to_numpy(), seconds)))
    print(f"{pairs.n} pairs, {pairs.meta.get('noise', 'noise unknown')}, {pairs.size} px")
    print(format_table(rows, title="estimates"))
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps({"pairs": args.pairs, "results": dict(rows)}, indent=2))
    return 0
