"""The UDL aligner: the network's angle (offset C removed), then the shared shift step, or with
``refine`` the exhaustive search guided by the network's angle (:mod:`.guided`): a window
around it, the whole circle for pairs the network is unsure of, then full resolution.

The network sees each image resampled to its own input size (bilinear with antialiasing,
standardised, masked: :func:`udl_align.training.prepare_input`), or the log-magnitude of its
spectrum for a spectrum network, which gives the angle modulo 180: the half turn is then
chosen by correlation. The shift and the refinement work on the original images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ..models import AlignNet, fused_for_inference
from .base import Aligner
from .correlation import (
    Estimate,
    fourier_crop,
    prepare_reference,
    score_angles,
    shift_step,
    to_tensor,
)
from .guided import GuidedSearch, cropped_size

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


class NetworkAligner(Aligner):
    name = "network"
    batch_size = 64  # the network's forward is 30% cheaper per pair at 64 than at 16 (2 cores)

    def __init__(
        self,
        model: AlignNet,
        offset: float = 0.0,
        refine: bool = False,
        refine_span: float = 15.0,
        confidence_floor: float | None = None,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(device=device, **kwargs)
        self.model = fused_for_inference(model).to(self.device)
        self.offset = float(offset)
        # with refine: pairs the network is less sure of than this get the whole-circle search
        self.confidence_floor = float(confidence_floor or 0.0)
        self.refine_enabled = bool(refine)
        self.refine_span = float(refine_span)
        self.name = "network+refine" if refine else "network"

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> NetworkAligner:
        from ..training import load_checkpoint, model_from_checkpoint

        path = resolve_model_path(path)
        state = load_checkpoint(path)
        offset = state.get("offset")
        if offset is None:
            raise InputError("checkpoint has no offset C: calibrate it first "
                             "(udl-align train writes one at the end)", path)
        if kwargs.get("confidence_floor") is None:
            kwargs["confidence_floor"] = state.get("confidence_floor")
        return cls(model_from_checkpoint(state, path), offset=offset, **kwargs)

    @torch.no_grad()
    def network_angles(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.network_estimate(a, b)[0]

    @torch.no_grad()
    def network_estimate(self, a: torch.Tensor, b: torch.Tensor):
        """The network's angles (offset C removed) and confidences (``calibration.confidence``;
        infinite for a scalar head, which has none), both ``(B,)`` on the aligner's device."""
        from ..calibration import confidence
        from ..losses import angle_of
        from ..training import model_input, predict_outputs

        cfg = self.model.cfg
        out = predict_outputs(self.model, model_input(cfg, a), model_input(cfg, b))
        # a spectrum network's outputs live on the doubled circle: this is the angle mod 180
        angle = torch.remainder((angle_of(out, cfg.head) - self.offset) / cfg.angle_factor,
                                360.0 / cfg.angle_factor)
        sure = (confidence(out) if self.model.cfg.head != "scalar"
                else torch.full_like(angle, torch.inf))
        return angle.to(self.device), sure.to(self.device)

    @torch.no_grad()
    def estimate(self, a, b) -> Estimate:
        ta, tb = to_tensor(a, self.device), to_tensor(b, self.device)
        if ta.shape != tb.shape:
            raise ValueError(f"a and b differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.shape[-1] != ta.shape[-2]:
            raise ValueError(f"images are not square: {tuple(ta.shape)}")
        angle, sure = self.network_estimate(ta, tb)
        pa, pb = self.preprocess(ta), self.preprocess(tb)
        s = self.shift_range(ta.shape[-1])
        if self.model.cfg.angle_factor == 2:
            angle = pick_half_turn(pa, pb, angle, s)
        if self.refine_enabled:
            search = GuidedSearch(s, span=self.refine_span)
            unsure = sure < self.confidence_floor
            # the search's many rotated copies outgrow the caches in big batches
            return Estimate.concat([
                search(pa[lo:lo + 16], pb[lo:lo + 16], angle[lo:lo + 16], unsure[lo:lo + 16])
                for lo in range(0, pa.shape[0], 16)])
        # parabola peaks: the network's angle is a few degrees off, which costs far more shift
        # accuracy than the parabola's bias; exact peaks would double the time
        tx, ty, score = shift_step(pa, pb, angle, s, prepare_reference(pb, s), fine=False)
        return Estimate.from_tensors(angle, tx, ty, score)


def pick_half_turn(a: torch.Tensor, b: torch.Tensor, angle: torch.Tensor,
                   max_shift: int) -> torch.Tensor:
    """``angle`` or ``angle + 180``, whichever correlates better (masked NCC over shifts, on
    pre-processed images cropped to 64 px): a spectrum cannot tell them apart."""
    n = a.shape[-1]
    m = cropped_size(n, 64)
    ref = prepare_reference(fourier_crop(b, m), max_shift * m / n)
    both = torch.stack([angle, angle + 180.0], 1)
    scores, _, _ = score_angles(fourier_crop(a, m), ref, both, mode="bicubic")
    return torch.remainder(both.gather(1, scores.argmax(1, keepdim=True))[:, 0], 360.0)


__all__ = ["NetworkAligner", "pick_half_turn", "resolve_model_path", "DEFAULT_MODEL"]
