"""The checkpoint format (the network's config inside, as VoxelMorph does) and the shipped model."""

from __future__ import annotations

from pathlib import Path

import torch

from udl_align.errors import InputError
from udl_align.io.files import atomic_output
from udl_align.network.models import AlignNet, NetConfig

CHECKPOINT_FORMAT = "udl-align-model/1"


def save_checkpoint(path: str | Path, state: dict) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(f"not a readable udl-align checkpoint: {type(exc).__name__}",
                         path) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError("not a udl-align checkpoint (unknown format)", path)
    return state


def export_for_inference(state: dict) -> dict:
    """A checkpoint without optimiser, scheduler and random states: what ``align`` needs (the
    config, weights, offset C) plus the record of how it was trained. Cannot be resumed."""
    keep = ("format", "net", "train", "model", "step", "history", "train_seconds", "offset",
            "offset_info", "confidence_floor", "trust")
    return {k: state[k] for k in keep if k in state}


def model_from_checkpoint(state: dict, path: str | Path = "checkpoint") -> AlignNet:
    model = AlignNet(NetConfig.from_dict(state["net"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:  # e.g. weights of a 128 px network under a 64 px config
        raise InputError(f"its weights do not fit its network config (input size "
                         f"{state['net'].get('size')} px)", path) from None
    return model.eval()


WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


DEFAULT_MODEL = WEIGHTS / "natural_cpu.pt"


def resolve_model_path(name: str | Path) -> Path:
    """``default`` names the model shipped in the package; anything else is a path."""
    if str(name) == "default":
        if not DEFAULT_MODEL.exists():
            raise InputError("the default model is not installed with this package",
                             DEFAULT_MODEL)
        return DEFAULT_MODEL
    return Path(name)
