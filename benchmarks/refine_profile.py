"""Where ``--refine``'s time goes, stage by stage, on held-out photograph pairs.

    python benchmarks/refine_profile.py --images ../shared/data/natural/coco

Aligns ``--n`` pairs per condition and generator with the shipped network and ``--refine``
under cProfile and reports each stage's share of the whole (cumulative time: the impulse
repair of both images, the network, the window around its angle, the whole-circle fallback,
the narrowing, the full-resolution polish, preparing the references; the fallback's own
narrowing and references count in the fallback as well). Prints a table, writes
``refine_profile.json`` and ``refine_profile.png``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

import numpy as np
import torch

from udl_align.aligners import make_aligner, run_aligner
from udl_align.allocator import keep_freed_memory
from udl_align.data.noise import CONDITIONS
from udl_align.errors import InputError
from udl_align.io.files import write_json
from udl_align.pipelines.compare import GENERATORS, photograph_pairs

#: stage name -> (file the function lives in, function name)
STAGES = {
    "impulse repair": ("filters.py", "repair_impulses"),
    "network": ("network.py", "network_estimate"),
    "window": ("guided.py", "window"),
    "fallback": ("guided.py", "fallback"),
    "narrow": ("guided.py", "_narrow"),
    "polish": ("guided.py", "polish"),
    "references": ("correlation.py", "prepare_reference"),
}


def profile(aligner, a: np.ndarray, b: np.ndarray) -> dict:
    """Seconds in all and per stage (cumulative) of aligning ``a``, ``b`` once."""
    run_aligner(aligner, a[:32], b[:32], progress=False)  # warm-up, untimed
    prof = cProfile.Profile()
    prof.enable()
    run_aligner(aligner, a, b, progress=False)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def cumulative(file: str, function: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == function)

    total = cumulative("base.py", "run_aligner")
    return {"seconds": total, "pairs": len(a),
            "share": {name: cumulative(*where) / total for name, where in STAGES.items()}}


def table(results: dict) -> str:
    head = ["generator", "condition", "ms per pair"] + list(STAGES)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for generator, per in results.items():
        for condition, r in per.items():
            cells = [generator, condition, f"{1e3 * r['seconds'] / r['pairs']:.1f}"]
            cells += [f"{r['share'][s]:.0%}" for s in STAGES]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{g} {c}", r) for g, per in results.items() for c, r in per.items()]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    left = np.zeros(len(rows))
    for stage in STAGES:
        widths = np.array([r["share"][stage] for _, r in rows])
        ax.barh(range(len(rows)), widths, left=left, label=stage)
        left += widths
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.set_xlabel("share of --refine's time (cumulative; the fallback includes its own stages)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="folder of photographs (e.g. COCO)")
    p.add_argument("--model", default="default")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.add_argument("--generators", nargs="+", default=list(GENERATORS), choices=GENERATORS)
    p.add_argument("--out-dir", default="results/refine_profile")
    args = p.parse_args(argv)
    keep_freed_memory()  # as the command line: the heap keeps freed memory
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        aligner = make_aligner("network", model=args.model, max_shift=10, refine=True)
        results = {}
        for g in args.generators:
            results[g] = {}
            for c in args.conditions:
                a, b, *_ = photograph_pairs(args.images, n=args.n, size=128, noise=c,
                                            max_shift=10, seed=args.seed, split="test",
                                            generator=g, progress=False)
                results[g][c] = profile(aligner, a, b)
    except InputError as err:
        print(f"refine_profile.py: error: {err}", file=sys.stderr)
        return 2
    print(f"\n{args.n} held-out pairs per condition, 128 px, {torch.get_num_threads()} torch "
          f"threads, cProfile (its overhead included)\n")
    print(table(results))
    write_json({"results": results, "n": args.n, "seed": args.seed,
                "threads": torch.get_num_threads()}, out / "refine_profile.json")
    plot(results, out / "refine_profile.png")
    print(f"wrote {out / 'refine_profile.json'} and {out / 'refine_profile.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
