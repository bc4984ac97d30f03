"""Table 2 on CPU: synthetic cryo-EM particles made from the paper's seven class averages,
under two protocols, every method side by side with particles/s; then the real particle
stacks, scored by correntropy.

    python benchmarks/table2.py --data ../shared/data/cryoem [--protocol strict|paper]

``--protocol strict`` (ours, the default): for every class average a training stack (seed 1)
and a held-out test stack (seed 99) are synthesised (``udl-align synth cryoem``: uniform
rotation, integer shifts in [-10, 10], |CTF| with defocus 0.5-2 um, Gaussian noise for SNR 0.1
measured inside the particle). A network is trained with ``udl-align train``'s default particle
recipe (or ``--objective``) on (reference, training particle) pairs for ``--train-minutes``,
no labels, or is loaded with ``--models``. Every held-out particle is aligned to the clean
reference: the estimate is the transform taking the reference onto the particle, compared
with the truth on the full circle, with the offset the network itself carries (no fit).

``--protocol paper`` (the authors' cryo-EM protocol, as their public code does it): one stack
per class average with SNR 0.1 measured over the whole image (``--snr-over image``); the
network is trained on that stack and scored on the same particles (transductive); the error of
the relative angle of consecutive particles ``(i, i + 1)`` is taken modulo 180 deg after one
offset per set fitted with the truth. Without labels the stack's reference is its
reference-free average (``bruteforce``, as ``align --stack`` makes it); every method aligns
each particle to it, and the relative angle of a pair is the difference of the two poses.

Real stacks (``particles/`` of ``--data``): a reference-free average is built with
``bruteforce``; then every method aligns the stack to it and is scored by the mean correntropy
of the aligned particles with that reference (the paper's score for real GroEL); each
method's average is saved as a PNG beside the reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from udl_align import geometry
from udl_align.aligners import make_aligner, run_side_by_side
from udl_align.allocator import keep_freed_memory
from udl_align.cli import main as cli
from udl_align.data.particles import read_reference
from udl_align.data.stacks import open_particles
from udl_align.errors import InputError
from udl_align.io.files import write_json
from udl_align.metrics import score
from udl_align.network.checkpoint import load_checkpoint
from udl_align.pipelines.stack_align import StackAlignOptions, align_stack
from udl_align.training.config import OBJECTIVES, TrainConfig, with_reference_symmetry
from udl_align.training.loop import train

TEMPLATES = {
    "GroEL": "center1_groel.png",
    "EMPIAR-10034": "center2_empiar10034.png",
    "EMPIAR-10398": "center3_empiar10398.png",
    "EMPIAR-10029": "center4_empiar10029.png",
    "EMPIAR-10065": "center5_empiar10065.png",
    "EMPIAR-10874": "center6_empiar10874.png",
    "EMPIAR-10397": "center7_empiar10397.png",
}
#: the paper's Table 2 (mean rotation error, degrees): (UDL, Fourier-based EMAF)
PAPER = {"GroEL": (0.84, 1.75), "EMPIAR-10034": (3.27, 6.12), "EMPIAR-10065": (2.33, 2.99)}
REAL = ("empiar_10076_7.star", "trpv1_small_stack.mrcs")
CLASSICAL = ("bruteforce", "fourier-mellin", "emaf")
#: the network's single answer, beside its default mean over quarter turns (test turns)
ONE_ANSWER = "network x1"
MAX_SHIFT = 15  # reference -> particle: shifts up to 10 px per axis, so up to 14.2 px


def synthesise(template: Path, stem: Path, n: int, seed: int, over: str = "particle") -> Path:
    star = stem.with_suffix(".star")
    if not star.exists():
        code = cli(["synth", "cryoem", "--template", str(template), "--out",
                    str(stem.with_suffix(".mrcs")), "--n", str(n), "--snr", "0.1", "--ctf",
                    "--snr-over", over,
                    "--seed", str(seed), "--quiet"])
        if code != 0:
            raise InputError("could not synthesise particles", template)
    return star


def trained_network(name: str, star: Path, reference: Path, args, out: Path,
                    models: dict) -> tuple[Path | None, dict | None]:
    """The network of class average ``name``: given in ``models``, else trained with the
    default particle recipe of ``udl-align train`` (or ``--objective``) on (``reference``,
    particle) pairs of ``star`` (once; kept in ``out``). ``None`` without networks."""
    if args.no_network or (args.only_given and name not in models):
        return None, None
    path = Path(models.get(name, out / f"{name}_{args.protocol}_{args.objective or 'default'}.pt"))
    if name not in models and not path.exists():
        given = {"objective": args.objective} if args.objective else {}
        cfg, _ = with_reference_symmetry(TrainConfig.for_data(
            star, minutes=args.train_minutes, seed=0, reference=str(reference),
            device=args.device, workers=args.workers, **given))
        train(cfg, path, progress=not args.quiet)
    state = load_checkpoint(path)
    return path, {"path": str(path), "steps": state["step"],
                  "minutes": state["train_seconds"] / 60,
                  "objective": state["train"]["objective"], "offset": state["offset"],
                  "symmetry": state["net"].get("symmetry", 1), "trust": state.get("trust")}


def methods_for(path: Path | None, a: np.ndarray, b: np.ndarray) -> tuple[dict, dict | None]:
    """The network's aligners (with ``path``) and the classical ones, for the pairs ``a``,
    ``b``. As ``udl-align align`` does, each network aligner has its trust check on a seeded
    sample of the pairs it is about to align (no labels; untimed): it may distrust the
    network, and it chooses the filter through which turns are told apart. Returns the
    aligners and the trust check's record (``None`` without a network)."""
    methods = {}
    if path is not None:
        methods = {"network": make_aligner("network", model=path, max_shift=MAX_SHIFT),
                   "network+refine": make_aligner("network", model=path, max_shift=MAX_SHIFT,
                                                  refine=True)}
        if methods["network"].test_turns > 1:  # also its single answer, for the cost
            methods[ONE_ANSWER] = make_aligner("network", model=path, max_shift=MAX_SHIFT,
                                               test_turns=1)
        checks = [aligner.check_trust(a, b) for aligner in methods.values()]
    methods.update({m: make_aligner(m, max_shift=MAX_SHIFT) for m in CLASSICAL})
    return methods, (checks[0] if path is not None else None)


def read_all(star: Path) -> tuple[np.ndarray, np.ndarray]:
    particles = open_particles(star)
    with particles.reader() as read:
        return read(np.arange(particles.n)), particles.transforms()


def strict_row(name: str, args, out: Path, models: dict) -> tuple[dict, dict | None]:
    """Held out, full circle, the network's own (label-free) offset, SNR inside the
    particle: every held-out particle aligned to the clean reference."""
    template = Path(args.data) / "class_averages" / TEMPLATES[name]
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    test_star = synthesise(template, work / f"{name}_test", args.n_test, 99)
    path, info = None, None
    if not args.no_network:
        train_star = synthesise(template, work / f"{name}_train", args.n_train, 1)
        path, info = trained_network(name, train_star,
                                     train_star.with_name(f"{name}_train_reference.mrc"),
                                     args, out, models)
    b, truth = read_all(test_star)
    reference = read_reference(test_star.with_name(f"{name}_test_reference.mrc"), b.shape[-1])
    a = np.repeat(reference[None], len(b), axis=0)
    methods, check = methods_for(path, a, b)
    if info is not None:
        info["align_trust"] = check  # the trust check on the pairs aligned here
    runs = run_side_by_side(methods, a, b, repeats=2, progress=not args.quiet, desc=name)
    row = {m: score(truth[:, 0], truth[:, 1], truth[:, 2], est.angle, est.tx, est.ty, sec)
           for m, (est, sec) in runs.items()}
    return row, info


def stack_average(star: Path, path: Path) -> Path:
    """The stack's reference-free average (``bruteforce``), written to ``path`` once."""
    from udl_align.io.mrc import write_mrc
    from udl_align.pipelines.reference_free import reference_free

    if not path.exists():
        particles = open_particles(star)
        image, _ = reference_free(particles, make_aligner("bruteforce"), 16, progress=False,
                                  log=lambda *_: None)
        write_mrc(path, image, particles.pixel_size, stack=False)
    return path


def paper_row(name: str, args, out: Path, models: dict) -> tuple[dict, dict | None]:
    """The authors' protocol: whole-image SNR 0.1, trained and scored on the same particles,
    the relative angle of consecutive particles modulo 180 deg after one offset fitted with
    the truth. Poses against the stack's reference-free average; a pair's angle is the
    difference of its two poses."""
    template = Path(args.data) / "class_averages" / TEMPLATES[name]
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    star = synthesise(template, work / f"{name}_paper", args.n_train, 1, over="image")
    average = stack_average(star, work / f"{name}_paper_average.mrc")
    path, info = trained_network(name, star, average, args, out, models)
    b, truth = read_all(star)
    b, truth = b[: args.n_score], truth[: args.n_score]  # the first particles of the set
    reference = read_reference(average, b.shape[-1])
    a = np.repeat(reference[None], len(b), axis=0)
    methods, check = methods_for(path, a, b)
    if info is not None:
        info["align_trust"] = check  # the trust check on the pairs aligned here
    runs = run_side_by_side(methods, a, b, repeats=1, progress=not args.quiet, desc=name)
    true_rel = np.diff(truth[:, 0])
    row = {}
    for m, (est, sec) in runs.items():
        rel = np.diff(est.angle)
        doubled = 2.0 * (rel - true_rel)  # modulo 180: the doubled circle
        offset = (geometry.circular_mean(doubled) / 2.0) % 180.0
        err = geometry.angle_error(2.0 * (rel - offset), 2.0 * true_rel) / 2.0
        row[m] = {"mean_deg": float(err.mean()), "median_deg": float(np.median(err)),
                  "under_5deg": float(np.mean(err < 5.0)), "offset_deg": float(offset),
                  "shift_mean_px": float("nan"), "pairs_per_s": float(1.0 / np.mean(sec)),
                  "pairs": int(len(err))}
    return row, info


def real_rows(args, out: Path, model: Path | None) -> dict:
    from udl_align.pipelines.reference_free import reference_free

    rows = {}
    for name in REAL:
        path = Path(args.data) / "particles" / name
        particles = open_particles(path)
        start = make_aligner("bruteforce")
        reference, history = reference_free(particles, start, 8, rounds=5, progress=False,
                                            log=lambda *_: None)
        methods = {m: make_aligner(m) for m in CLASSICAL}
        if model is not None:
            methods["network"] = make_aligner("network", model=model)
            methods["network+refine"] = make_aligner("network", model=model, refine=True)
        rows[name] = {"particles": particles.n, "size": particles.size,
                      "reference_rounds": len(history), "methods": {}}
        for m, aligner in methods.items():
            options = StackAlignOptions(batch_size=aligner.batch_size, progress=False)
            summary = align_stack(particles, reference, aligner, out / "real" / name / m,
                                  options, log=lambda *_: None,
                                  record={"reference": "reference-free (bruteforce)"})
            rows[name]["methods"][m] = {"mean_correntropy": summary["mean_correntropy"],
                                        "particles_per_s": summary["particles_per_s"]}
    return rows


def synthetic_table(results: dict, methods: list[str]) -> str:
    head = ("| class average | paper UDL | paper EMAF | " +
            " | ".join(f"{m} deg mean (median)" for m in methods) + " | " +
            " | ".join(f"{m} shift px" for m in methods) + " | " +
            " | ".join(f"{m} particles/s" for m in methods) + " |")
    lines = [head, "|" + "---|" * (3 + 3 * len(methods))]
    for name, row in results.items():
        paper = PAPER.get(name, (None, None))
        cells = [f"{p:.2f}" if p is not None else "-" for p in paper]
        cells += [f"{row[m]['mean_deg']:.2f} ({row[m]['median_deg']:.2f})" if m in row else "-"
                  for m in methods]
        cells += [f"{row[m]['shift_mean_px']:.2f}" if m in row else "-" for m in methods]
        cells += [f"{row[m]['pairs_per_s']:.0f}" if m in row else "-" for m in methods]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def real_table(rows: dict) -> str:
    methods = list(next(iter(rows.values()))["methods"])
    lines = ["| stack | particles | " + " | ".join(f"{m} correntropy" for m in methods) + " |",
             "|" + "---|" * (2 + len(methods))]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['particles']} ({row['size']} px) | " + " | ".join(
            f"{row['methods'][m]['mean_correntropy']:.4f}" for m in methods) + " |")
    return "\n".join(lines)


def plot(results: dict, methods: list[str], path: Path, protocol: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from udl_align.io.files import save_figure

    names = list(results)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        ax.bar(np.arange(len(names)) + i * width,
               [results[n][m]["mean_deg"] if m in results[n] else np.nan for n in names],
               width, label=m)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2,
                  [n.replace("EMPIAR-", "") for n in names])
    ax.set_ylabel("mean rotation error (deg)")
    ax.set_yscale("log")
    ax.set_title(f"Table 2 on CPU ({protocol} protocol): synthetic particles, SNR 0.1, |CTF|")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the cryoem folder (class_averages/, "
                   "particles/)")
    p.add_argument("--templates", nargs="+", default=list(TEMPLATES), choices=list(TEMPLATES))
    p.add_argument("--models", nargs="*", default=[], help="NAME=checkpoint already trained")
    p.add_argument("--objective", default=None, choices=OBJECTIVES,
                   help="the networks' training objective (default: udl-align train's default "
                   "for particle stacks)")
    p.add_argument("--train-minutes", type=float, default=10.0)
    p.add_argument("--device", default="cpu", help="where the networks train (cpu or cuda)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes making training pairs (for a GPU; see train --workers)")
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=1000, help="strict: held-out particles")
    p.add_argument("--n-score", type=int, default=1000,
                   help="paper: the first particles of the set that are scored")
    p.add_argument("--protocol", default="strict", choices=("strict", "paper"))
    p.add_argument("--real-model", default="GroEL",
                   help="which trained model also aligns the real stacks ('' for none)")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--no-network", action="store_true", help="the classical methods only")
    p.add_argument("--only-given", action="store_true",
                   help="networks only for the class averages named in --models (no training)")
    p.add_argument("--out-dir", default="results/table2")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    keep_freed_memory()  # as the command line: the heap keeps freed memory
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = dict(item.split("=", 1) for item in args.models)
    start = time.time()
    try:
        results, trained = {}, {}
        for name in args.templates:
            row = strict_row if args.protocol == "strict" else paper_row
            results[name], info = row(name, args, out, models)
            if info is not None:
                trained[name] = info
        real = None
        if not args.skip_real:
            real_model = Path(trained[args.real_model]["path"]) if args.real_model in trained \
                else None
            real = real_rows(args, out, real_model)
    except InputError as err:
        print(f"table2.py: error: {err}", file=sys.stderr)
        return 2
    methods = [m for m in ("network", ONE_ANSWER, "network+refine", *CLASSICAL)
               if any(m in row for row in results.values())]
    report = {"synthetic": results, "models": trained, "real": real, "paper": PAPER,
              "threads": torch.get_num_threads(), "max_shift": MAX_SHIFT,
              "protocol": args.protocol, "n_test": args.n_test, "n_score": args.n_score,
              "train_minutes": args.train_minutes, "wall_seconds": time.time() - start}
    if args.protocol == "strict":
        print(f"\nstrict protocol: {args.n_test} held-out particles per class average, 128 px, "
              "SNR 0.1 inside the particle, |CTF|, full circle, the network's own label-free "
              f"offset; {report['threads']} torch threads")
    else:
        print(f"\npaper protocol: the first {args.n_score} particles of the training set "
              "(transductive), 128 px, SNR 0.1 over the whole image, |CTF|, relative angles of "
              "consecutive particles modulo 180 deg after one truth-fitted offset; "
              f"{report['threads']} torch threads")
    for name, info in trained.items():
        trust, here = info["trust"] or {}, info.get("align_trust") or {}
        turns = ("" if here.get("turn_lowpass") is None else
                 f", full resolution through the pre-filter {here['turn_lowpass']:g} (0: none)")
        print(f"  {name}: objective {info['objective']}, symmetry {info['symmetry']}, "
              f"{info['steps']} steps, "
              f"{info['minutes']:.1f} min, trust check {trust.get('agreement', float('nan')):.0%}"
              f" (on the pairs aligned: {here.get('agreement', float('nan')):.0%}{turns})")
    print(synthetic_table(results, methods))
    if real is not None:
        print("\nReal stacks, aligned to their reference-free (bruteforce) average:")
        print(real_table(real))
    write_json(report, out / "table2.json")
    plot(results, methods, out / "table2.png", args.protocol)
    print(f"wrote {out / 'table2.json'}, {out / 'table2.png'}"
          + (f" and the real stacks' averages under {out / 'real'}" if real else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())


