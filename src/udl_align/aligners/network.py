"""The UDL aligner: the network's angle (offset C removed), then the shared shift step, or with
``refine`` the narrow exhaustive search around the network's angle at full resolution.

The network sees each image resampled to its own input size (bilinear with antialiasing,
standardised, masked: :func:`udl_align.training.prepare_input`); the shift and the refinement
work on the original images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ..models import AlignNet, fused_for_inference
from .base import Aligner
from .bruteforce import BruteForce
from .correlation import Estimate, prepare_reference, shift_step, to_tensor

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

    def __init__(
        self,
        model: AlignNet,
        offset: float = 0.0,
        refine: bool = False,
        refine_span: float = 15.0,
        candidates: int = 1,
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
        # the refinement is the exhaustive search restricted to a window around the network
        # (one coarse candidate: inside a narrow window the runner-up basins that the full
        # circle needs are rare, and each candidate costs a full-resolution search)
        self.search = BruteForce(max_shift=self.max_shift, lowpass=self.preprocess.lowpass,
                                 device=device, candidates=candidates)

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
        from ..training import predict_outputs, prepare_input

        size = self.model.cfg.size
        out = predict_outputs(self.model, prepare_input(a, size), prepare_input(b, size))
        angle = torch.remainder(angle_of(out, self.model.cfg.head) - self.offset, 360.0)
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
        if self.refine_enabled:
            unsure = sure < self.confidence_floor
            if not unsure.any():
                return self.search.search(pa, pb, centre=angle, half_width=self.refine_span)
            if unsure.all():
                return self.search.search(pa, pb)
            sure_rows = ~unsure
            inner = self.search.search(pa[sure_rows], pb[sure_rows], centre=angle[sure_rows],
                                       half_width=self.refine_span)
            outer = self.search.search(pa[unsure], pb[unsure])
            return Estimate.merge(sure_rows.cpu().numpy(), inner, outer)
        # parabola peaks: the network's angle is a few degrees off, which costs far more shift
        # accuracy than the parabola's bias; exact peaks would double the time
        tx, ty, score = shift_step(pa, pb, angle, s, prepare_reference(pb, s), fine=False)
        return Estimate.from_tensors(angle, tx, ty, score)


__all__ = ["NetworkAligner", "resolve_model_path", "DEFAULT_MODEL"]
