"""Throughput of ``udl-align align --stack``: particles/s and peak memory, with 1 or more
processes (``torchrun``) and several batch sizes, on CPU (and on a GPU with ``--device cuda``).

    python benchmarks/throughput.py --n 20000 --size 64

Each configuration runs as its own command in a fresh process tree, so its peak resident
memory (the largest of its processes, from ``getrusage``) is its own. Two rates are reported:
``compute`` (particles over the time spent aligning, as ``align.json`` records it; with several
processes, over the slowest process's time) and ``wall`` (particles over the whole command,
start-up, reading and writing included). Without ``--stack`` a synthetic GroEL-like stack is
made first from a scikit-image picture, so no data is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from udl_align.io.files import save_figure, write_json

MEASURE = """
import resource, subprocess, sys, time
start = time.time()
code = subprocess.run(sys.argv[1:]).returncode
wall = time.time() - start
print(code, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def make_stack(work: Path, n: int, size: int) -> tuple[Path, Path]:
    from PIL import Image
    from skimage import data

    picture = work / "template.png"
    grey = data.camera()[100:356, 150:406]
    Image.fromarray(grey).save(picture)
    stack = work / "stack.mrcs"
    subprocess.run([sys.executable, "-m", "udl_align", "synth", "cryoem", "--template",
                    str(picture), "--out", str(stack), "--n", str(n), "--size", str(size),
                    "--snr", "0.1", "--max-shift", str(max(size // 16, 1)), "--quiet"],
                   check=True)
    return stack, work / "stack_reference.mrc"


def run_one(stack: Path, reference: Path, method: str, procs: int, batch: int,
            device: str, out_dir: Path) -> dict:
    choice = ["--model", method.split("=", 1)[1]] if method.startswith("model=") \
        else ["--method", method]
    align = ["-m", "udl_align", "align", "--stack", str(stack), "--reference", str(reference),
             "--out-dir", str(out_dir), *choice, "--batch-size", str(batch),
             "--device", device, "--quiet"]
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", str(procs), *align] if procs > 1
               else [sys.executable, *align])
    threads = max(1, (os.cpu_count() or 2) // procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", MEASURE, *command], env=env,
                         capture_output=True, text=True, check=True)
    code, wall, peak_kb = out.stdout.split()[-3:]
    if int(code) != 0:
        raise RuntimeError(f"align failed ({code}): {out.stderr[-500:]}")
    summary = json.loads((out_dir / "align.json").read_text())
    return {"method": method, "processes": procs, "threads_each": threads, "batch": batch,
            "particles": summary["aligned"], "compute_per_s": summary["particles_per_s"],
            "wall_per_s": summary["aligned"] / float(wall), "wall_s": float(wall),
            "peak_rss_mb": int(peak_kb) / 1024}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (method, procs) in sorted({(r["method"], r["processes"]) for r in rows}):
        mine = sorted((r for r in rows if r["method"] == method and r["processes"] == procs),
                      key=lambda r: r["batch"])
        ax.plot([r["batch"] for r in mine], [r["wall_per_s"] for r in mine], "o-",
                label=f"{method}, {procs} process{'es' if procs > 1 else ''}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("particles / s (wall)")
    ax.set_title("align --stack throughput")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stack", help="particle stack (.mrcs/.star); default: synthesise one")
    p.add_argument("--reference", help="its reference (needed with --stack)")
    p.add_argument("--n", type=int, default=20000, help="particles to synthesise")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--methods", nargs="+", default=["model=default", "fourier-mellin"])
    p.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batches", nargs="+", type=int, default=[16, 64, 256])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default="results/throughput")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.stack and not args.reference:
        p.error("--stack needs --reference")
    rows = []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        stack, reference = (Path(args.stack), Path(args.reference)) if args.stack \
            else make_stack(work, args.n, args.size)
        for method in args.methods:
            for procs in args.procs:
                for batch in args.batches:
                    start = time.time()
                    row = run_one(stack, reference, method, procs, batch, args.device,
                                  work / f"run-{len(rows)}")
                    rows.append(row)
                    print(f"{method} x{procs} batch {batch}: {row['wall_per_s']:.0f}/s wall, "
                          f"{row['compute_per_s']:.0f}/s compute, peak "
                          f"{row['peak_rss_mb']:.0f} MB ({time.time() - start:.0f} s)",
                          flush=True)
    lines = ["| method | processes x threads | batch | particles/s (wall) | particles/s "
             "(compute) | peak RSS per process (MB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['processes']} x {r['threads_each']} | {r['batch']} "
                     f"| {r['wall_per_s']:.0f} | {r['compute_per_s']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    print(f"\n{rows[0]['particles']} particles of {args.size} px, {os.cpu_count()} CPU cores")
    print("\n".join(lines))
    write_json({"rows": rows, "cpus": os.cpu_count(), "size": args.size}, out / "throughput.json")
    plot(rows, out / "throughput.png")
    print(f"wrote {out / 'throughput.json'} and {out / 'throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


