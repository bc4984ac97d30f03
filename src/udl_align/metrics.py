"""Scoring estimates against the truth: rotation error statistics, shift error, throughput."""

from __future__ import annotations

import numpy as np

from udl_align.geometry import angle_error

#: an angle is "right" below this error (degrees) when the shift error is reported separately
RIGHT_ANGLE_DEG = 5.0


def score(
    true_angle: np.ndarray,
    true_tx: np.ndarray,
    true_ty: np.ndarray,
    angle: np.ndarray,
    tx: np.ndarray,
    ty: np.ndarray,
    seconds: np.ndarray | None = None,
) -> dict:
    """Summary statistics of one method on one set of pairs (angles in degrees, shifts in px).

    Shift error is the Euclidean distance between estimated and true shift, reported over all
    pairs and over the pairs whose angle error is below ``RIGHT_ANGLE_DEG`` (a wrong angle makes
    any shift meaningless). ``pairs_per_s`` is ``n / sum(seconds)`` when timings are given.
    """
    err = angle_error(angle, true_angle)
    shift_err = np.hypot(np.asarray(tx) - true_tx, np.asarray(ty) - true_ty)
    right = err < RIGHT_ANGLE_DEG
    out = {
        "n": int(err.size),
        "mean_deg": float(err.mean()),
        "median_deg": float(np.median(err)),
        "p90_deg": float(np.percentile(err, 90)),
        "max_deg": float(err.max()),
        "under_1deg": float(np.mean(err < 1.0)),
        "under_2deg": float(np.mean(err < 2.0)),
        "under_5deg": float(np.mean(err < 5.0)),
        "shift_mean_px": float(shift_err.mean()),
        "shift_median_px": float(np.median(shift_err)),
        "shift_mean_px_angle_right": float(shift_err[right].mean()) if right.any() else None,
        "pairs_per_s": None,
    }
    if seconds is not None and np.sum(seconds) > 0:
        out["pairs_per_s"] = float(err.size / np.sum(seconds))
    return out


COLUMNS = (
    ("mean_deg", "mean", "{:.2f}"),
    ("median_deg", "median", "{:.2f}"),
    ("p90_deg", "p90", "{:.2f}"),
    ("under_1deg", "<1deg", "{:.0%}"),
    ("under_2deg", "<2deg", "{:.0%}"),
    ("under_5deg", "<5deg", "{:.0%}"),
    ("shift_mean_px", "shift px", "{:.2f}"),
    ("shift_mean_px_angle_right", "shift px (angle ok)", "{:.2f}"),
    ("pairs_per_s", "pairs/s", "{:.1f}"),
)


def format_value(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def format_table(rows: list[tuple[str, dict]], title: str = "method") -> str:
    """A Markdown table, one row per ``(label, score dict)``."""
    head = [title] + [c[1] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, s in rows:
        cells = [label] + [format_value(s.get(key), fmt) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
