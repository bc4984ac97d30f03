"""Does the label-free trust check tell the networks that learned from those that did not?

    python benchmarks/trust_audit.py --data ../shared/data/cryoem \
        --models GroEL=a.pt GroEL=b.pt EMPIAR-10034=c.pt ... [--out-dir results/trust_audit]

Each network (``NAME=checkpoint``, a class average of ``table2.py``; a name may repeat) is
judged on the strict Table 2 test stack of its class average (1000 held-out particles, seed 99,
SNR 0.1 inside the particle, |CTF|; made once with ``udl-align synth cryoem`` as ``table2.py``
makes it), as ``udl-align align`` judges it: the checkpoint's own label-free calibration and
trust record, then the trust check on a seeded sample of 64 of the (reference, particle) pairs
about to be aligned (agreement with the exhaustive search within 15 deg, modulo what the
network can know). No labels go into the check.

The truth is used only to judge the check: the network alone aligns all test particles, and
its share within 15 deg of the true angle (modulo the same period) is what the check
estimates from 64 pairs. A network **learned** when that share is at least one half (its
median error under 15 deg; chance is 8% on the full circle, 17% modulo 180). The check is
right when it flags exactly the networks that did not learn. Prints a table, writes
``trust_audit.json`` and ``trust_audit.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from table2 import MAX_SHIFT, TEMPLATES, read_all, synthesise
from udl_align import geometry
from udl_align.aligners import run_aligner
from udl_align.aligners.network import MIN_AGREEMENT, TRUST_TOLERANCE, NetworkAligner
from udl_align.allocator import keep_freed_memory
from udl_align.data.particles import read_reference
from udl_align.errors import InputError
from udl_align.io.files import write_json


def audit(name: str, path: Path, data: Path, work: Path) -> dict:
    """One network on its class average's strict test stack: the check, then the truth."""
    star = synthesise(data / "class_averages" / TEMPLATES[name], work / f"{name}_test", 1000, 99)
    b, truth = read_all(star)
    reference = read_reference(star.with_name(f"{name}_test_reference.mrc"), b.shape[-1])
    a = np.repeat(reference[None], len(b), axis=0)
    aligner = NetworkAligner.from_checkpoint(path, max_shift=MAX_SHIFT)
    by_checkpoint = aligner.distrust
    check = aligner.check_trust(a, b)
    est, _ = run_aligner(aligner, a, b, progress=False)
    period = check["period_deg"]
    error = np.abs((est.angle - truth[:, 0] + period / 2) % period - period / 2)
    full = geometry.angle_error(est.angle, truth[:, 0])
    within = float(np.mean(error <= TRUST_TOLERANCE))
    return {"name": name, "path": str(path), "period_deg": period,
            "flagged": bool(aligner.distrust), "reason": aligner.distrust,
            "flagged_by_checkpoint": bool(by_checkpoint), "agreement": check["agreement"],
            "within_15_deg": within, "learned": within >= MIN_AGREEMENT,
            "mean_deg_in_period": float(error.mean()),
            "median_deg_in_period": float(np.median(error)),
            "mean_deg_full_circle": float(full.mean())}


def table(rows: list[dict]) -> str:
    lines = ["| class average | checkpoint | period | trust check agreement (64 pairs, no labels)"
             " | flagged | within 15 deg of the truth (1000) | mean / median error in period |"
             " learned | check right |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        right = r["flagged"] != r["learned"]
        lines.append(f"| {r['name']} | {r['path']} | {r['period_deg']:g} | {r['agreement']:.0%} | "
                     f"{'yes' if r['flagged'] else 'no'} | {r['within_15_deg']:.0%} | "
                     f"{r['mean_deg_in_period']:.2f} / {r['median_deg_in_period']:.2f} | "
                     f"{'yes' if r['learned'] else 'no'} | {'yes' if right else '**no**'} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for flagged, colour, label in ((True, "tab:red", "flagged"), (False, "tab:blue", "trusted")):
        pick = [r for r in rows if r["flagged"] == flagged]
        ax.scatter([r["within_15_deg"] for r in pick], [r["agreement"] for r in pick],
                   c=colour, label=label)
    ax.axvline(MIN_AGREEMENT, color="grey", linestyle="--", linewidth=1)
    ax.axhline(MIN_AGREEMENT, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("share within 15 deg of the truth (1000 held-out particles)")
    ax.set_ylabel("trust check: agreement with the search (64 pairs)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("label-free trust check against the truth")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the shared cryo-EM data (class_averages/)")
    p.add_argument("--models", nargs="+", required=True, metavar="NAME=CHECKPOINT")
    p.add_argument("--out-dir", default="results/trust_audit")
    args = p.parse_args(argv)
    keep_freed_memory()  # as the command line: the heap keeps freed memory
    out = Path(args.out_dir)
    (out / "work").mkdir(parents=True, exist_ok=True)
    rows = []
    for item in args.models:
        name, _, path = item.partition("=")
        if name not in TEMPLATES or not path:
            p.error(f"--models takes NAME=CHECKPOINT with NAME one of {', '.join(TEMPLATES)}")
        try:
            r = audit(name, Path(path), Path(args.data), out / "work")
        except (InputError, KeyError, RuntimeError, TypeError) as e:  # another version's file
            print(f"{name} {path}: skipped, not a checkpoint this version reads ({e})")
            continue
        rows.append(r)
        print(f"{name} {path}: agreement {r['agreement']:.0%}, flagged {r['flagged']}, "
              f"within 15 deg {r['within_15_deg']:.0%}", flush=True)
    right = sum(r["flagged"] != r["learned"] for r in rows)
    print(table(rows))
    print(f"\nthe check was right on {right} of {len(rows)} networks "
          f"({sum(not r['learned'] for r in rows)} did not learn, "
          f"{sum(r['flagged'] for r in rows)} flagged)")
    write_json({"rows": rows, "right": right, "networks": len(rows)}, out / "trust_audit.json")
    plot(rows, out / "trust_audit.png")
    print(f"wrote {out / 'trust_audit.json'}, {out / 'trust_audit.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
