"""Classical aligners side by side on seeded photograph pairs from both pair generators, all
seven noise conditions, with the plain, slow reference search as the yardstick row.

    python benchmarks/classical.py --images ../shared/data/natural/coco

Pairs come from the *test* split of the photographs (split by file-name hash, as ``udl-align
synth natural --split test``), the same geometry under every condition, drawn by the package's
own generator (``synth``) and by the independent one (``independent``: scikit-image rotation
after a scipy shift, its own texture rule). Prints a Markdown table per generator (mean rotation
error and pairs/s per method and condition) and one of ``bruteforce`` against the reference
search, writes ``classical.json`` and ``classical.png`` to ``--out-dir``. Methods can carry
options: ``bruteforce:lowpass=0`` or ``bruteforce:angle_step=2,search_size=0``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from udl_align.aligners import make_aligner
from udl_align.allocator import keep_freed_memory
from udl_align.data.noise import CONDITIONS
from udl_align.errors import InputError
from udl_align.io.files import write_json
from udl_align.metrics import format_table
from udl_align.pipelines.compare import (
    GENERATORS,
    compare_on_photographs,
    comparison_table,
    plot_comparison,
)

INTEGER_OPTIONS = ("search_size", "chunk", "angle_samples", "candidates")


def parse_method(spec: str, max_shift: int, device: str):
    name, _, rest = spec.partition(":")
    options: dict = {"max_shift": max_shift, "device": device}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        number = float(value)
        options[key] = None if number == 0 and key in ("lowpass", "search_size") else number
        if key in INTEGER_OPTIONS and options[key] is not None:
            options[key] = int(number)
        if key == "impulses":
            options[key] = bool(number)
    return spec, make_aligner(name, **options)


def against(results: dict, method: str, yardstick: str) -> str:
    """Markdown: per generator and condition, ``method``'s mean error beside the yardstick's,
    their ratio, and the pairs/s ratio."""
    lines = [f"| generator | condition | {method} deg | {yardstick} deg | error ratio | "
             f"{method} / {yardstick} pairs/s |", "|---|---|---|---|---|---|"]
    for generator, per_condition in results.items():
        for c, per in per_condition.items():
            if method not in per or yardstick not in per:
                continue
            m, y = per[method], per[yardstick]
            lines.append(f"| {generator} | {c} | {m['mean_deg']:.2f} | {y['mean_deg']:.2f} | "
                         f"{m['mean_deg'] / max(y['mean_deg'], 1e-9):.2f} | "
                         f"{m['pairs_per_s'] / y['pairs_per_s']:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="folder of photographs (e.g. COCO)")
    p.add_argument("--n", type=int, default=200, help="pairs per condition (default 200)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--max-shift", type=int, default=10)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--split", default="test", choices=("all", "train", "test"))
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.add_argument("--generators", nargs="+", default=list(GENERATORS), choices=GENERATORS)
    p.add_argument("--methods", nargs="+",
                   default=["bruteforce", "fourier-mellin", "emaf", "reference"])
    p.add_argument("--repeats", type=int, default=1,
                   help="times each chunk is timed, the fastest counting (as timeit)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default="results/classical")
    p.add_argument("--name", default="classical", help="stem of the JSON and PNG files")
    args = p.parse_args(argv)
    keep_freed_memory()  # as the command line: the heap keeps freed memory

    try:
        methods = dict(parse_method(m, args.max_shift, args.device) for m in args.methods)
        start = time.time()
        reports = {g: compare_on_photographs(
            args.images, methods, args.conditions, n=args.n, size=args.size,
            max_shift=args.max_shift, seed=args.seed, split=args.split, generator=g,
            repeats=args.repeats) for g in args.generators}
    except InputError as err:
        print(f"classical.py: error: {err}", file=sys.stderr)
        return 2
    results = {g: r["results"] for g, r in reports.items()}
    sources = next(iter(reports.values()))["sources"]
    report = {"results": results, "sources": sources, "n": args.n, "size": args.size,
              "max_shift": args.max_shift, "seed": args.seed, "split": args.split,
              "threads": torch.get_num_threads(), "wall_seconds": time.time() - start}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"\n{args.n} pairs per condition and generator, {args.size} px, shifts up to "
          f"{args.max_shift} px, {len(sources)} held-out photographs ({args.split} split), "
          f"{report['threads']} torch threads, {report['wall_seconds'] / 60:.1f} min")
    for g, per_condition in results.items():
        print(f"\n### generator: {g}\n")
        print(comparison_table(per_condition))
        for condition, per_method in per_condition.items():
            print(f"\n{g}, {condition}\n" + format_table(list(per_method.items())))
    yardstick = next((m for m in methods if m.startswith("reference")), None)
    if yardstick and "bruteforce" in methods:
        print("\n### bruteforce against the reference search\n")
        print(against(results, "bruteforce", yardstick))
    write_json(report, out / f"{args.name}.json")
    flat = {f"{g} {c}": per for g, pc in results.items() for c, per in pc.items()}
    plot_comparison(flat, out / f"{args.name}.png",
                    f"classical aligners, {args.size} px, {args.n} pairs/condition")
    print(f"\nwrote {out / (args.name + '.json')} and {out / (args.name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
