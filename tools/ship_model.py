"""Make a trained checkpoint the package's default model (``--model default``).

    python tools/ship_model.py runs/udl.pt --command "udl-align train --data <coco> ..."

Writes ``src/udl_align/weights/natural_cpu.pt`` (weights, config, offset C, confidence floor;
no optimiser state) and ``natural_cpu.json`` beside it: how the model was trained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from udl_align.io.files import atomic_output
from udl_align.network.checkpoint import (
    DEFAULT_MODEL,
    export_for_inference,
    load_checkpoint,
    save_checkpoint,
)


def earlier_stages(before: dict, record: dict) -> dict:
    """``stage1``, ``stage2``, ... of the model fine-tuned from (its own stages, then itself),
    its description, and the totals over all stages including ``record``'s."""
    stages = [before[k] for k in sorted(before) if k.startswith("stage")]
    stages.append({"steps": before["steps"], "train_minutes": before["train_minutes"],
                   "seed": before["train"]["seed"], "lr": before["train"]["lr"]})
    out = {f"stage{i}": stage for i, stage in enumerate(stages, 1)}
    out["what"] = before["what"]
    out["total_steps"] = sum(s["steps"] for s in stages) + record["steps"]
    out["total_train_minutes"] = round(sum(s["train_minutes"] for s in stages)
                                       + record["train_minutes"], 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--command", required=True, help="the command that trained it, for the record")
    p.add_argument("--data", default="MS-COCO photographs, train split by file-name hash "
                   "(115 of the 134 photographs in ../shared/data/natural/coco); 128 px pairs, "
                   "all seven noise conditions mixed, resampled to the model's input size")
    p.add_argument("--machine", default="2 CPU cores, no GPU")
    p.add_argument("--after", default=None,
                   help="the JSON record of the model this one was fine-tuned from: its stages "
                   "are carried over (stage1, stage2, ...), and the totals summed")
    args = p.parse_args()
    state = load_checkpoint(args.checkpoint)
    save_checkpoint(DEFAULT_MODEL, export_for_inference(state))
    record = {
        "what": "udl-align's default natural-image model (cpu preset, UDL objective)",
        "trained_with": args.command,
        "data": args.data,
        "machine": args.machine,
        "steps": state["step"],
        "train_minutes": round(state["train_seconds"] / 60, 1),
        "offset_deg": state["offset"],
        "offset_info": state["offset_info"],
        "confidence_floor": state.get("confidence_floor"),
        "last_validation": next((e for e in reversed(state["history"])
                                 if "val_mean_deg" in e), None),
        "trust": state.get("trust"),
        "net": state["net"],
        "train": state["train"],
    }
    if args.after:
        record.update(earlier_stages(json.loads(Path(args.after).read_text()), record))
    with atomic_output(DEFAULT_MODEL.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    print(f"wrote {DEFAULT_MODEL} and {DEFAULT_MODEL.with_suffix('.json')}")


if __name__ == "__main__":
    main()
