"""What the shared impulse repair costs beside a whole alignment: per held-out photograph,
seven conditions, both pair generators, one process.

    python benchmarks/repair_cost.py --images ../shared/data/natural/coco

For each condition: the share of images the repair touches and how (the switching median for
impulses on a smooth image, the whole-image median for clipped noise), the pixels it changes,
its time per 128 px image (batches of 32, the fastest of ``--repeats``; as the aligners run it,
compiled where numba is installed, and its torch version), and ``bruteforce``'s
time per pair in the same process for scale (it repairs both images of a pair). Prints a
table, writes ``repair_cost.json`` and ``repair_cost.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from udl_align import filters, repair_kernel
from udl_align.aligners import make_aligner, run_aligner
from udl_align.allocator import keep_freed_memory
from udl_align.data.noise import CONDITIONS
from udl_align.errors import InputError
from udl_align.io.files import write_json
from udl_align.pipelines.compare import GENERATORS, photograph_pairs


def fastest(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls (after one untimed call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(images, condition: str, generator: str, n: int, seed: int, batch: int,
            repeats: int) -> dict:
    a, b, *_ = photograph_pairs(images, n=n // 2, size=128, noise=condition, max_shift=10,
                                seed=seed, split="test", generator=generator, progress=False)
    x = torch.from_numpy(np.concatenate([a, b])).float()
    plan = filters.repair_plan(x)
    repaired = filters.repair_impulses(x)
    # the repair as aligners run it (compiled where numba is installed) and its torch version
    timed = {compiled: fastest(lambda c=compiled: [
        filters.repair_impulses(x[i:i + batch], compiled=c) for i in range(0, len(x), batch)],
        repeats) for compiled in (None, False)}
    bf = make_aligner("bruteforce", max_shift=10)
    pairs = min(48, len(a))
    run_aligner(bf, a[:8], b[:8], progress=False)  # warm-up, untimed
    _, bf_seconds = run_aligner(bf, a[:pairs], b[:pairs], progress=False)  # per pair
    return {"images": len(x), "touched": len(plan.hit) / len(x),
            "switching": int(plan.smooth.sum()) / len(x),
            "whole_median": int((~plan.smooth).sum()) / len(x),
            "changed_pixels": float((repaired != x).float().mean()),
            "ms_per_image": 1e3 * timed[None] / len(x),
            "torch_ms_per_image": 1e3 * timed[False] / len(x),
            "bruteforce_ms_per_pair": 1e3 * float(bf_seconds.mean())}


def table(results: dict) -> str:
    lines = ["| generator | condition | images repaired (switching / whole median) | pixels "
             "changed | repair ms per image | its torch version | bruteforce ms per pair | "
             "repair of a pair / bruteforce |", "|---|---|---|---|---|---|---|---|"]
    for generator, per in results.items():
        for condition, r in per.items():
            lines.append(
                f"| {generator} | {condition} | {r['touched']:.0%} ({r['switching']:.0%} / "
                f"{r['whole_median']:.0%}) | {r['changed_pixels']:.1%} | "
                f"{r['ms_per_image']:.3f} | {r['torch_ms_per_image']:.3f} | "
                f"{r['bruteforce_ms_per_pair']:.1f} | "
                f"{2 * r['ms_per_image'] / r['bruteforce_ms_per_pair']:.1%} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(results)
    for k, (generator, per) in enumerate(results.items()):
        xs = np.arange(len(per)) + k * width
        ax.bar(xs, [r["torch_ms_per_image"] for r in per.values()], width, color="none",
               edgecolor=f"C{k}", label=f"{generator}, torch version")
        ax.bar(xs, [r["ms_per_image"] for r in per.values()], width, color=f"C{k}",
               label=generator)
    names = list(next(iter(results.values())))
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax.set_ylabel("impulse repair, ms per 128 px image")
    ax.set_title("The shared impulse repair's cost (held-out COCO)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="folder of photographs (e.g. COCO)")
    p.add_argument("--n", type=int, default=400, help="images per condition (half as pairs)")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.add_argument("--generators", nargs="+", default=list(GENERATORS), choices=GENERATORS)
    p.add_argument("--out-dir", default="results/repair_cost")
    args = p.parse_args(argv)
    keep_freed_memory()  # as the command line: the heap keeps freed memory
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = {g: {c: measure(args.images, c, g, args.n, args.seed, args.batch,
                                  args.repeats) for c in args.conditions}
                   for g in args.generators}
    except InputError as err:
        print(f"repair_cost.py: error: {err}", file=sys.stderr)
        return 2
    compiled = "yes" if repair_kernel.available() else "no (numba is not installed)"
    print(f"\n{args.n} held-out images per condition, 128 px, {torch.get_num_threads()} torch "
          f"threads, compiled repair: {compiled}\n")
    print(table(results))
    write_json({"results": results, "n": args.n, "seed": args.seed, "batch": args.batch,
                "threads": torch.get_num_threads()}, out / "repair_cost.json")
    plot(results, out / "repair_cost.png")
    print(f"wrote {out / 'repair_cost.json'} and {out / 'repair_cost.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
