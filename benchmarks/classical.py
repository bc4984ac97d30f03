"""Classical aligners side by side on seeded photograph pairs, all seven noise conditions.

    python benchmarks/classical.py --images ../shared/data/natural/coco

Pairs come from the *test* split of the photographs (split by file-name hash, as ``udl-align
synth natural --split test``), the same geometry under every condition. Prints a Markdown table
(mean rotation error and pairs/s per method and condition), writes ``classical.json`` and
``classical.png`` to ``--out-dir``. Methods can carry options: ``bruteforce:lowpass=0`` or
``bruteforce:angle_step=2,search_size=0``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from udl_align.aligners import make_aligner
from udl_align.compare import (
    compare_on_photographs,
    comparison_table,
    plot_comparison,
    write_json,
)
from udl_align.errors import InputError
from udl_align.metrics import format_table
from udl_align.noise import CONDITIONS


def parse_method(spec: str, max_shift: int, device: str):
    name, _, rest = spec.partition(":")
    options: dict = {"max_shift": max_shift, "device": device}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        number = float(value)
        options[key] = None if number == 0 and key in ("lowpass", "search_size") else number
        if key in ("search_size", "chunk", "angle_samples") and options[key] is not None:
            options[key] = int(number)
    return spec, make_aligner(name, **options)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="folder of photographs (e.g. COCO)")
    p.add_argument("--n", type=int, default=200, help="pairs per condition (default 200)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--max-shift", type=int, default=10)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--split", default="test", choices=("all", "train", "test"))
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.add_argument("--methods", nargs="+", default=["bruteforce", "fourier-mellin", "emaf"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default="results/classical")
    p.add_argument("--name", default="classical", help="stem of the JSON and PNG files")
    args = p.parse_args(argv)

    try:
        methods = dict(parse_method(m, args.max_shift, args.device) for m in args.methods)
        start = time.time()
        report = compare_on_photographs(
            args.images, methods, args.conditions, n=args.n, size=args.size,
            max_shift=args.max_shift, seed=args.seed, split=args.split,
        )
    except InputError as err:
        print(f"classical.py: error: {err}", file=sys.stderr)
        return 2
    report["threads"] = torch.get_num_threads()
    report["wall_seconds"] = time.time() - start
    results = report["results"]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"\n{args.n} pairs per condition, {args.size} px, shifts up to {args.max_shift} px, "
          f"{len(report['sources'])} held-out photographs ({args.split} split), "
          f"{report['threads']} torch threads\n")
    print(comparison_table(results))
    for condition, per_method in results.items():
        print(f"\n{condition}\n" + format_table(list(per_method.items())))
    write_json(report, out / f"{args.name}.json")
    plot_comparison(results, out / f"{args.name}.png",
                    f"classical aligners, {args.size} px, {args.n} pairs/condition")
    print(f"\nwrote {out / (args.name + '.json')} and {out / (args.name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
