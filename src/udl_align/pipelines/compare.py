"""Side-by-side comparison of aligners on seeded synthetic pairs, in one process: the engine
behind ``udl-align demo`` and the benchmarks. Every method sees the same pairs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from udl_align.aligners import Aligner, run_side_by_side
from udl_align.data.independent import independent_pairs
from udl_align.data.photos import generate_natural_pairs
from udl_align.io.files import save_figure
from udl_align.metrics import score

#: the pair generators a comparison can draw from: the package's own
#: (:mod:`udl_align.data.photos`) and the independent one (:mod:`udl_align.data.independent`)
GENERATORS = ("synth", "independent")


def photograph_pairs(images, n: int, size: int, noise: str, max_shift: int, seed: int,
                     split: str, generator: str = "synth", progress: bool = True):
    """Seeded pairs from photographs by one of :data:`GENERATORS`: ``(a, b, angle, tx, ty,
    sources)`` (``sources``: the photographs of the split)."""
    if generator == "independent":
        p = independent_pairs(images, n=n, size=size, noise=noise, max_shift=max_shift,
                              seed=seed, split=split)
        return p.a, p.b, p.angle, p.tx, p.ty, p.meta["sources"]
    if generator != "synth":
        raise ValueError(f"unknown generator '{generator}' (expected one of "
                         f"{', '.join(GENERATORS)})")
    batch, meta = generate_natural_pairs(images, n=n, size=size, noise=noise,
                                         max_shift=max_shift, seed=seed, split=split,
                                         progress=progress)
    return batch.a, batch.b, batch.angle, batch.tx, batch.ty, meta["sources"]


def compare_on_photographs(
    images: str | Path | Sequence[str | Path],
    methods: dict[str, Aligner],
    conditions: Sequence[str],
    n: int,
    size: int = 128,
    max_shift: int = 10,
    seed: int = 0,
    split: str = "all",
    progress: bool = True,
    keep_pairs: bool = False,
    repeats: int = 2,
    generator: str = "synth",
) -> dict:
    """``{"results": {condition: {method: score dict}}, "pairs": {...} (if keep_pairs)}``.

    The same seed gives the same geometry under every condition (only the noise differs).
    ``generator``: one of :data:`GENERATORS`.
    """
    results: dict[str, dict] = {}
    kept: dict[str, dict] = {}
    sources: list = []
    for condition in conditions:
        a, b, angle, tx, ty, sources = photograph_pairs(
            images, n=n, size=size, noise=condition, max_shift=max_shift, seed=seed,
            split=split, generator=generator, progress=progress,
        )
        results[condition] = {}
        kept[condition] = {"a": a, "b": b, "angle": angle, "tx": tx, "ty": ty, "estimates": {}}
        runs = run_side_by_side(methods, a, b, repeats=repeats, progress=progress,
                                desc=f"{generator} {condition}")
        for name, (est, seconds) in runs.items():
            results[condition][name] = score(angle, tx, ty, est.angle, est.tx, est.ty, seconds)
            kept[condition]["estimates"][name] = est
    out = {"results": results, "sources": sources, "n": n, "size": size,
           "max_shift": max_shift, "seed": seed, "split": split, "generator": generator}
    if keep_pairs:
        out["pairs"] = kept
    return out


def comparison_table(results: dict) -> str:
    """Markdown: one row per condition; mean error (deg) and pairs/s per method."""
    conditions = list(results)
    methods = list(results[conditions[0]])
    head = ["condition"] + [f"{m} mean deg" for m in methods] + [f"{m} pairs/s" for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in conditions:
        row = [c] + [f"{results[c][m]['mean_deg']:.2f}" for m in methods]
        row += [f"{results[c][m]['pairs_per_s']:.1f}" for m in methods]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_comparison(results: dict, path: str | Path, title: str) -> None:
    """Grouped bars: mean rotation error per condition (one bar per method) and pairs/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(results)
    methods = list(results[conditions[0]])
    x = np.arange(len(conditions))
    width = 0.8 / len(methods)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5),
                                   gridspec_kw={"width_ratios": [3, 1]})
    for i, m in enumerate(methods):
        errs = [results[c][m]["mean_deg"] for c in conditions]
        ax1.bar(x + (i - (len(methods) - 1) / 2) * width, errs, width, label=m)
    ax1.set_xticks(x, conditions, rotation=20)
    ax1.set_yscale("log")
    ax1.set_ylabel("mean rotation error (deg, log)")
    ax1.set_title(title)
    ax1.legend()
    speeds = [np.mean([results[c][m]["pairs_per_s"] for c in conditions]) for m in methods]
    ax2.bar(methods, speeds, color=[f"C{i}" for i in range(len(methods))])
    ax2.set_yscale("log")
    ax2.set_ylabel("pairs / s (mean over conditions)")
    ax2.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    save_figure(fig, path)


def plot_accuracy_vs_time(results: dict, path: str | Path, title: str) -> None:
    """Mean rotation error against time per pair, one point per method and condition (same
    colour: same method; same marker: same condition). Down and left is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(results)
    methods = list(results[conditions[0]])
    markers = "osD^v<>P*X"
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, m in enumerate(methods):
        ms = [1e3 / results[c][m]["pairs_per_s"] for c in conditions]
        errs = [max(results[c][m]["mean_deg"], 1e-3) for c in conditions]
        ax.plot(ms, errs, color=f"C{i}", lw=0.8, alpha=0.5)
        for j, (t, e) in enumerate(zip(ms, errs, strict=True)):
            ax.scatter(t, e, color=f"C{i}", marker=markers[j % len(markers)],
                       label=m if j == 0 else None)
    for j, c in enumerate(conditions):  # a legend entry per condition, in grey
        ax.scatter([], [], color="grey", marker=markers[j % len(markers)], label=c)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time per pair (ms, log)")
    ax.set_ylabel("mean rotation error (deg, log)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
