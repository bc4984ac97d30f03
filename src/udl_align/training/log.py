"""The training log a user reads to see whether a run learns: beside checkpoint ``RUN.pt``,
``RUN_history.csv`` (one row per recorded step) and ``RUN_history.png`` (the training loss,
the validation error where the pairs have truth, and the trust check's agreement with the
exhaustive search, against steps), rewritten at every checkpoint from the run's history."""

from __future__ import annotations

import csv
from pathlib import Path

from udl_align.io.files import atomic_output, save_figure

#: the columns of the CSV, in order (a history entry may lack any but ``step``)
COLUMNS = ("step", "seconds", "loss", "val_mean_deg", "val_median_deg", "search_val_deg",
           "search_agreement", "search_chance")


def history_paths(out: str | Path) -> tuple[Path, Path]:
    """The CSV and PNG beside checkpoint ``out``."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix else out
    return Path(f"{stem}_history.csv"), Path(f"{stem}_history.png")


def write_history(out: str | Path, history: list[dict]) -> tuple[Path, Path]:
    """Write the CSV and the PNG of ``history`` (the checkpoint's list of entries) beside
    checkpoint ``out``, each atomically. Returns their paths."""
    csv_path, png_path = history_paths(out)
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for entry in history:
            writer.writerow({k: _cell(entry.get(k)) for k in COLUMNS})
    plot_history(history, png_path)
    return csv_path, png_path


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _series(history: list[dict], key: str) -> tuple[list, list]:
    rows = [(e["step"], e[key]) for e in history if e.get(key) is not None]
    return [r[0] for r in rows], [r[1] for r in rows]


def plot_history(history: list[dict], path: str | Path) -> None:
    """Loss and validation error (degrees, left) and the trust agreement (share, right)
    against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, trust) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("loss", "training loss (running mean)"),
                       ("val_mean_deg", "validation mean error (deg)"),
                       ("val_median_deg", "validation median error (deg)"),
                       ("search_val_deg", "difference from the exhaustive search (deg)")):
        steps, values = _series(history, key)
        if steps:
            ax.plot(steps, values, label=label, marker="." if len(steps) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("degrees")
    ax.set_title("loss and validation")
    if ax.lines:
        ax.legend(fontsize=8)
    steps, values = _series(history, "search_agreement")
    trust.plot(steps, values, marker="o", label="agreement with the exhaustive search")
    steps_c, chance = _series(history, "search_chance")
    if steps_c:
        trust.plot(steps_c, chance, linestyle="--", color="grey", label="chance")
    trust.set_ylim(0, 1.02)
    trust.set_xlabel("step")
    trust.set_ylabel("share of pairs within 15 deg")
    trust.set_title("trust check (no labels)")
    trust.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["COLUMNS", "history_paths", "write_history", "plot_history"]
