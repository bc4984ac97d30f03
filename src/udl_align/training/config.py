"""The training config: the one home of every training default, and of the defaults that
depend on the data (:data:`PARTICLE_DEFAULTS`, applied by :meth:`TrainConfig.for_data`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from udl_align.aligners.correlation import half_turn_match
from udl_align.data.particles import read_reference
from udl_align.network.models import NetConfig

OBJECTIVES = ("udl", "supervised", "stn", "search")
LR_SCHEDULES = ("step", "cosine")
#: the cosine schedule ends at this fraction of the learning rate
LR_FLOOR = 0.02


@dataclass
class TrainConfig:
    objective: str = "udl"
    preset: str = "cpu"
    images: str = ""  # folder of photographs (the natural-image generator) or a pairs .npz
    init: str = ""  # checkpoint whose weights (and network config) start the run: fine-tuning
    noise: str = "mix"
    source_size: int = 128  # pairs are made at this size, then resampled to the model's
    max_shift: int = 10
    disturb_shift: float = 5.0  # UDL disturbance shift range (source pixels), as the authors
    batch_size: int = 32
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_schedule: str = "step"  # "step": the paper's; "cosine": down to LR_FLOOR x lr by the end
    lr_hold: float = 0.8  # cosine: the share of the budget at the full rate before it falls
    lr_step: int = 12000  # step schedule: lr x lr_gamma every lr_step steps (the paper's)
    lr_gamma: float = 0.8
    steps: int | None = 1000  # None on resume: keep the run's saved budget
    minutes: float | None = None
    seed: int = 0
    checkpoint_minutes: float = 3.0
    checkpoint_steps: int = 0  # also a checkpoint every this many steps (0: by time only)
    val_pairs: int = 64
    val_every: int = 100
    calib_groups: int = 256  # unlabelled view triples for the label-free offset C
    device: str = "cpu"  # where the network trains ("cuda" for a GPU); pairs are made on CPU
    workers: int = 0  # processes making pairs beside the training one (a GPU outruns one)
    group_by: str = ""  # particle stacks: pair particles only within groups of this STAR column
    split_views: bool = False  # UDL's A and B from the even / odd pixels (see udl_batch)
    turn_augment: bool = False  # supervised: turn both images at random, the target with them
    search_particles: int = 4000  # objective search: particles the exhaustive search aligns
    # supervised and search: fresh Gaussian noise added to the second image of every pair, its
    # standard deviation this fraction of the image's (0: none), and a random shift of it of
    # up to augment_shift pixels (the angle stays): a finite stack's own noise is not learned
    augment_noise: float = 0.0
    augment_shift: float = 0.0
    # decay of an exponential moving average of the weights (and batch-norm statistics) that
    # validation, checkpoints and the trained model use (0: the last step's weights)
    ema: float = 0.0
    reference: str = ""  # particle stacks: pairs are (this reference, a particle)
    net: dict = field(default_factory=dict)  # overrides of the preset's NetConfig

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = set(cls.__dataclass_fields__)
        clean = {k: tuple(v) if k == "betas" else v for k, v in d.items() if k in names}
        return cls(**clean)

    @classmethod
    def for_data(cls, images: str | Path, resume: bool = False, **given) -> TrainConfig:
        """The config for training on ``images``: the ``given`` fields, and for the others the
        defaults that suit the data (:func:`data_defaults`) or else the field defaults.

        ``given["net"]`` holds overrides of the preset's :class:`NetConfig` (``input``,
        ``input_lowpass``, ``symmetry``, ...). Where they are not given:

        - ``objective``: the data's (``search`` for particles, ``udl`` otherwise);
        - ``init``: the data's starting model (the shipped one for particles) for a new UDL or
          search run of the cpu preset, none otherwise; ``"none"`` also means random weights;
        - ``disturb_shift``, ``split_views``, ``turn_augment``, ``lr_schedule`` and the input
          low-pass: the data's;
        - the input kind: the data's, except when ``init`` names a model (its input is kept);
        - ``steps``: none when ``resume`` (the run keeps its saved budget; a new run gets the
          field default).
        """
        data = data_defaults(images)
        objective = given.get("objective", data["objective"])
        init = given.get("init")
        if init is None:
            new_run = (objective in ("udl", "search")
                       and given.get("preset", cls.preset) == "cpu" and not resume)
            init = data["init"] if new_run else ""
        init = "" if init == "none" else init
        wanted = dict(given.get("net", {}))
        net = {"input_lowpass": wanted.pop("input_lowpass", data["input_lowpass"]),
               "test_turns": wanted.pop("test_turns", data["test_turns"])}
        if "input" in wanted or not init:
            net["input"] = wanted.pop("input", data["input"])
        net.update(wanted)
        fields = {"disturb_shift": data["disturb_shift"], "split_views": data["split_views"],
                  "turn_augment": data["turn_augment"], "lr_schedule": data["lr_schedule"],
                  "augment_noise": data["augment_noise"],
                  "augment_shift": data["augment_shift"], "ema": data["ema"],
                  **given, "objective": objective,
                  "images": str(images), "init": init, "net": net}
        if resume and "steps" not in given:
            fields["steps"] = None
        return cls(**fields)


#: the search objective learns the angle modulo 180 (``symmetry`` 2; ``align`` picks the turn
#: by correlation) when the reference matches its own half turn at least this well as the
#: exhaustive search sees it (:func:`udl_align.aligners.correlation.half_turn_match`): on the
#: paper's class averages GroEL 0.98, EMPIAR-10398 0.99 (two-fold side views: full-circle
#: networks stayed at chance, loss 86 deg after 1350 steps on GroEL, while modulo 180 they
#: learned, trust check 100%), EMPIAR-10397 0.82 (a full-circle network half a turn off on
#: 14% of its trust check and 18.1 deg held out; modulo 180 with the turn picked by
#: correlation 5.6 deg), the other four 0.65-0.71 (full-circle networks 3.5-8.5 deg)
NEAR_TWOFOLD = 0.76


def with_reference_symmetry(cfg: TrainConfig) -> tuple[TrainConfig, float | None]:
    """``cfg`` with the symmetry its reference suggests, for the ``search`` objective when no
    symmetry was given: 2 for a near two-fold symmetric reference (``NEAR_TWOFOLD``), else 1.
    Returns the config and the reference's half-turn match (``None``: not looked at)."""
    if cfg.objective != "search" or not cfg.reference or "symmetry" in cfg.net:
        return cfg, None
    image = read_reference(cfg.reference, None)
    similarity = half_turn_match(image)
    symmetry = 2 if similarity >= NEAR_TWOFOLD else 1
    return TrainConfig.from_dict({**cfg.to_dict(), "net": {**cfg.net, "symmetry": symmetry}}), \
        similarity


def field_default(name: str):
    """The default of :class:`TrainConfig`'s field ``name``."""
    return TrainConfig.__dataclass_fields__[name].default


VALIDATION = 10_000  # seed offsets of the validation and calibration sources
CALIBRATION = 20_000


def is_particle_data(path: str | Path) -> bool:
    """A particle stack, or a STAR or cryoSPARC ``.cs`` file naming stacks (rather than
    photographs or a pairs file)."""
    return Path(path).suffix.lower() in (".mrcs", ".mrc", ".star", ".cs")


#: what differs by default when training on particles:
#: - the objective: ``search``, the exhaustive search's poses of the training particles against
#:   the reference as targets (label-free). At a particle SNR of 0.1 UDL from the natural
#:   model stayed at chance on EMPIAR-10065 (84 deg held out); ``search`` reached 8.7 deg
#:   there, 4.6 on EMPIAR-10874 and 9.1 on EMPIAR-10034 in 10 minutes on two cores
#:   (docs/results.md, Table 2). UDL stays one flag away
#:   (``--objective udl``). Its symmetry follows the reference (``with_reference_symmetry``);
#: - the start: the shipped natural-image UDL model. From random weights the network's output
#:   hardly turns with a particle, and at a constant output the expected gradient of the UDL
#:   loss is zero (its targets are symmetric on the circle whatever the input): every run from
#:   scratch stayed at a constant (loss at chance), on clean particles too, while the natural
#:   model fine-tuned on clean particles reached 5 deg in 5 minutes;
#: - image input: spectra do not start learning under UDL even from photographs;
#: - rotation-only disturbances, as the authors' cryo-EM code (a shifted frame's border enters
#:   the network's mask, and its seam gives the disturbance away: measured, a training loss of
#:   55 deg with a validation error at chance);
#: - the input low-pass and split views (see NetConfig.input_lowpass and udl_batch);
#: - turned copies of every training pair (``turn_augment``): a few thousand particles are
#:   otherwise learned by heart (training loss 2 deg, held-out error 13-30 deg);
#: - the cosine learning-rate schedule over the run's budget (minutes or steps), held at
#:   ``lr`` for its first ``lr_hold`` (0.8): a run of minutes never reaches the step
#:   schedule's first decay, and at a constant rate the last steps can undo what was learned
#:   (EMPIAR-10034, 10 minutes: validation 9 deg at step 2800, 36 deg at the deadline 49
#:   steps later). A cosine over the whole budget learned less (held-out EMPIAR-10034, 10
#:   minutes on one core: 16.1 deg mean against 8.5 at a constant rate and 8.8 held 80%);
#: - fresh noise (half the particle's standard deviation) and shifts up to 4 px on the
#:   training particle, and a moving average of the weights (decay 0.999): held-out
#:   EMPIAR-10029, 10 minutes, network alone 16.06 -> 12.78 deg;
#: - the search objective keeps the weights closest to the exhaustive search on held-out
#:   particles (``loop.keep_best``; no labels): a run's held-out error rises and falls (GroEL
#:   modulo 180: 4.7 deg at step 2600, 9.0 at the end), and the kept weights gave GroEL 7.15
#:   deg on the full circle against 15.65 for the last ones;
#: - ``test_turns`` 4: the angle is the mean of the answers for the particle and its quarter
#:   turns (GroEL 7.15 -> 4.90, EMPIAR-10029 12.78 -> 8.47 deg, for four network passes).
PARTICLE_DEFAULTS = {"input": "image", "disturb_shift": 0.0, "input_lowpass": 0.25,
                     "split_views": True, "init": "default", "objective": "search",
                     "turn_augment": True, "lr_schedule": "cosine",
                     "augment_noise": 0.5, "augment_shift": 4.0, "ema": 0.999,
                     "test_turns": 4}


#: the same settings for photographs and pairs files: the field defaults
OTHER_DEFAULTS = {"input": NetConfig.input, "disturb_shift": TrainConfig.disturb_shift,
                  "input_lowpass": NetConfig.input_lowpass,
                  "split_views": TrainConfig.split_views, "init": TrainConfig.init,
                  "objective": TrainConfig.objective, "turn_augment": TrainConfig.turn_augment,
                  "lr_schedule": TrainConfig.lr_schedule,
                  "augment_noise": TrainConfig.augment_noise,
                  "augment_shift": TrainConfig.augment_shift, "ema": TrainConfig.ema,
                  "test_turns": NetConfig.test_turns}


def data_defaults(path: str | Path) -> dict:
    """The training settings (``PARTICLE_DEFAULTS``' keys) suited to the data at ``path``."""
    return dict(PARTICLE_DEFAULTS if is_particle_data(path) else OTHER_DEFAULTS)
