"""Settings of ``--refine``'s guided search side by side with ``bruteforce`` on held-out
photograph pairs: how its defaults were chosen (accuracy must stay with ``bruteforce``'s while
the time falls).

    python benchmarks/refine_settings.py --images ../shared/data/natural/coco \\
        --variants '{"default": {}, "step4": {"fallback_step": 4.0}}'

Each variant is a ``GuidedSearch`` keyword set (see ``udl_align.aligners.guided``), and
optionally the aligner's ``confidence_floor`` (pairs less sure than it get the whole circle),
applied to the same network (``--model``, default: the shipped one). Prints mean error, median
and pairs/s relative to ``bruteforce`` per condition and variant; writes
``refine_settings.json`` and ``refine_settings.png`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from udl_align.aligners import make_aligner
from udl_align.aligners.guided import GuidedSearch
from udl_align.allocator import keep_freed_memory
from udl_align.data.noise import CONDITIONS
from udl_align.errors import InputError
from udl_align.io.files import write_json
from udl_align.pipelines.compare import GENERATORS, compare_on_photographs, plot_comparison


def table(results: dict, names: list[str]) -> str:
    lines = ["| condition | bruteforce mean / median deg | "
             + " | ".join(f"{m} mean / median deg, x bruteforce" for m in names)
             + " |", "|" + "---|" * (len(names) + 2)]
    for condition, per in results.items():
        base = per["bruteforce"]["pairs_per_s"]
        cells = [f"{per['bruteforce']['mean_deg']:.2f} / {per['bruteforce']['median_deg']:.2f}"]
        cells += [f"{per[m]['mean_deg']:.2f} / {per[m]['median_deg']:.2f}, "
                  f"{per[m]['pairs_per_s'] / base:.2f}x" for m in names]
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="folder of photographs (e.g. COCO)")
    p.add_argument("--model", default="default")
    p.add_argument("--variants", default='{"default": {}}',
                   help="JSON: {name: {GuidedSearch keyword: value}}")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.add_argument("--generator", default="synth", choices=GENERATORS,
                   help="which pair generator (default: synth)")
    p.add_argument("--out-dir", default="results/refine_settings")
    args = p.parse_args(argv)
    keep_freed_memory()  # as the command line: the heap keeps freed memory
    try:
        variants = json.loads(args.variants)
        if not isinstance(variants, dict) or not all(isinstance(v, dict)
                                                     for v in variants.values()):
            raise ValueError("expected an object of objects")
    except ValueError as err:
        print(f"refine_settings.py: error: --variants: {err}", file=sys.stderr)
        return 2
    try:
        methods = {"bruteforce": make_aligner("bruteforce", max_shift=10)}
        for name, options in variants.items():
            options = dict(options)
            floor = options.pop("confidence_floor", None)  # the aligner's, not the search's
            GuidedSearch(10, **options)  # an unknown setting fails here, before any work
            methods[name] = make_aligner("network", model=args.model, max_shift=10, refine=True,
                                         search_options=options, confidence_floor=floor)
        report = compare_on_photographs(args.images, methods, args.conditions, n=args.n,
                                        seed=args.seed, split="test", repeats=args.repeats,
                                        generator=args.generator)
    except (InputError, TypeError) as err:
        print(f"refine_settings.py: error: {err}", file=sys.stderr)
        return 2
    report.update(variants=variants, threads=torch.get_num_threads(), generator=args.generator)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(table(report["results"], list(variants)))
    write_json(report, out / "refine_settings.json")
    plot_comparison(report["results"], out / "refine_settings.png", "refine settings")
    print(f"wrote {out / 'refine_settings.json'} and {out / 'refine_settings.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
