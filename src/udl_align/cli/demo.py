"""The main job on embedded defaults: make noisy pairs from photographs bundled with
scikit-image, align them with every method, print the comparison and write figures."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from udl_align import geometry
from udl_align.aligners import CLASSICAL, make_aligner
from udl_align.errors import InputError
from udl_align.io.files import all_or_nothing, save_figure, write_json
from udl_align.network.checkpoint import DEFAULT_MODEL
from udl_align.pipelines.compare import (
    compare_on_photographs,
    comparison_table,
    plot_accuracy_vs_time,
    plot_comparison,
)

#: licence-clean photographs shipped inside scikit-image (no network needed)
DEMO_PHOTOS = ("astronaut.png", "camera.png", "coffee.png", "chelsea.png", "motorcycle_left.png")
DEMO_CONDITIONS = ("clean", "gaussian:0.1", "saltpepper:0.2")


def demo_photographs() -> list[Path]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    paths = [folder / name for name in DEMO_PHOTOS if (folder / name).exists()]
    if not paths:
        raise InputError("scikit-image's bundled photographs are missing", folder)
    return paths


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", default="udl-align-demo",
                        help="where figures and results go (default ./udl-align-demo)")
    parser.add_argument("--n", type=int, default=24, help="pairs per condition (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def plot_examples(pairs: dict, path: Path, k: int = 4) -> None:
    """Per pair: a, b, and b brought back onto a by each method (like the paper's Fig. 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(pairs["estimates"])
    k = min(k, len(pairs["a"]))
    cols = 2 + len(methods)
    fig, axes = plt.subplots(k, cols, figsize=(2.2 * cols, 2.3 * k), squeeze=False)
    for i in range(k):
        truth = geometry.Rigid.of(pairs["angle"][i], pairs["tx"][i], pairs["ty"][i])
        panels = [("a", pairs["a"][i]), (f"b (true {float(truth.angle):.1f} deg)", pairs["b"][i])]
        for m in methods:
            est = pairs["estimates"][m]
            t = geometry.Rigid.of(est.angle[i], est.tx[i], est.ty[i])
            err = float(geometry.angle_error(est.angle[i], truth.angle))
            panels.append((f"{m}: err {err:.1f} deg", geometry.align(pairs["b"][i], t)))
        for ax, (label, img) in zip(axes[i], panels, strict=True):
            lo, hi = np.percentile(img, [1, 99])
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def main(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    out = Path(args.out_dir)
    methods = {}
    if DEFAULT_MODEL.exists():  # the shipped network, alone and with its refinement
        for refine in (False, True):
            net = make_aligner("network", model="default", max_shift=10, refine=refine)
            methods[net.name] = net
    methods.update({name: make_aligner(name, max_shift=10) for name in CLASSICAL})
    report = compare_on_photographs(
        demo_photographs(), methods, DEMO_CONDITIONS, n=args.n, seed=args.seed,
        progress=not args.quiet, keep_pairs=True, repeats=1,  # a demo, not a benchmark
    )
    pairs = report.pop("pairs")
    print(f"{args.n} pairs per condition, 128 px, from scikit-image's photographs")
    print(comparison_table(report["results"]))
    out.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves no folder behind
    with all_or_nothing() as finished:  # nor some of the figures without the rest
        plot_comparison(report["results"], out / "comparison.png", "udl-align demo")
        finished.append(out / "comparison.png")
        plot_accuracy_vs_time(report["results"], out / "accuracy_vs_time.png",
                              "udl-align demo: accuracy against time")
        finished.append(out / "accuracy_vs_time.png")
        plot_examples(pairs["gaussian:0.1"], out / "examples_gaussian0.1.png")
        finished.append(out / "examples_gaussian0.1.png")
        write_json(report, out / "results.json")
    print(f"wrote {out / 'comparison.png'}, {out / 'accuracy_vs_time.png'}, "
          f"{out / 'examples_gaussian0.1.png'}, {out / 'results.json'}")
    return 0
