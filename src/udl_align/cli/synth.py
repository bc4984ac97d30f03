"""Make seeded synthetic data with known transforms: pairs from photographs (``synth
natural``) or a particle stack from a class average or map (``synth cryoem``)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from udl_align import geometry
from udl_align.data.particles import SNR_OVER, ParticleSynth, load_template
from udl_align.data.photos import generate_natural_pairs
from udl_align.errors import InputError
from udl_align.io.files import all_or_nothing, check_writable
from udl_align.io.mrc import mrc_stack_writer, write_mrc
from udl_align.io.pairs import Pairs, write_pairs
from udl_align.io.particle_files import ParticlePoses, write_particles_star


def add_args(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True, parser_class=type(parser))
    nat = kinds.add_parser(
        "natural",
        help="pairs from a folder of photographs (the paper's MS-COCO protocol)",
        description="Pairs from photographs: angle uniform in [0, 360), integer shift in "
        "[-max_shift, max_shift], the second patch cut from the rotated, shifted whole image.",
    )
    nat.add_argument("--images", required=True, help="folder of PNG/JPEG/TIFF photographs")
    nat.add_argument("--out", required=True, help="pairs file to write (.npz)")
    nat.add_argument("--n", type=int, default=1000, help="number of pairs (default 1000)")
    nat.add_argument("--size", type=int, default=128, help="patch size in pixels (default 128)")
    nat.add_argument("--noise", default="clean",
                     help="clean | gaussian:SNR | saltpepper:P (default clean)")
    nat.add_argument("--max-shift", type=int, default=10, help="largest shift in px (default 10)")
    nat.add_argument("--seed", type=int, default=0)
    nat.add_argument("--split", default="all", choices=("all", "train", "test"),
                     help="photographs to use, split by file-name hash (default all)")
    nat.add_argument("--test-percent", type=float, default=20.0,
                     help="share of photographs in the test split (default 20)")
    nat.add_argument("--quiet", action="store_true", help="no progress bar")
    nat.set_defaults(make=natural)

    cry = kinds.add_parser(
        "cryoem",
        help="a particle stack from a 2D class average or a 3D map",
        description="Particles from a template (see udl_align.data.particles): isolated by a soft "
        "mask, on a smooth random background, turned by an angle uniform in [0, 360) and "
        "shifted by integers in [-max_shift, max_shift], optionally |CTF|-filtered, with "
        "Gaussian noise for the SNR asked inside the particle mask. Writes STEM.mrcs, the clean "
        "reference STEM_reference.mrc, and the true transforms as STEM.star (RELION 3.1).",
    )
    cry.add_argument("--template", required=True,
                     help="class average (PNG/JPEG/TIFF/MRC) or 3D map (MRC, projected along "
                     "one seeded random direction)")
    cry.add_argument("--out", required=True, help="particle stack to write (.mrcs)")
    cry.add_argument("--n", type=int, default=50000, help="number of particles (default 50000)")
    cry.add_argument("--size", type=int, default=128, help="box size in px (default 128)")
    cry.add_argument("--snr", default="0.1",
                     help="signal variance over noise variance (default 0.1), measured where "
                     "--snr-over says; a comma list (e.g. 1000,1,0.3,0.1) gives particle i the "
                     "i-th value in turn: a mixed stack")
    cry.add_argument("--snr-over", choices=SNR_OVER, default="particle",
                     help="where the signal variance is measured: 'particle', inside the "
                     "particle's mask (default; the harder reading), or 'image', over the whole "
                     "box, as the paper's cryo-EM experiments (for a small particle the SNR "
                     "inside it is then several times higher)")
    cry.add_argument("--max-shift", type=int, default=10, help="largest shift in px (default 10)")
    cry.add_argument("--ctf", action="store_true",
                     help="filter by |CTF|: 300 kV, Cs 2.7 mm, amplitude contrast 0.1, defocus "
                     "uniform in 0.5-2 um per particle")
    cry.add_argument("--pixel-size", type=float, default=None,
                     help="A/px of the output (default: the template's header scaled to --size; "
                     "2 A at the template's own size for PNG)")
    cry.add_argument("--background", type=float, default=0.1,
                     help="smooth random background, std relative to the particle's (default "
                     "0.1; 0 for none)")
    cry.add_argument("--seed", type=int, default=0)
    cry.add_argument("--quiet", action="store_true", help="no progress bar")
    cry.set_defaults(make=cryoem)


def main(args: argparse.Namespace) -> int:
    return args.make(args)


def cryoem(args: argparse.Namespace) -> int:
    if args.n < 1 or args.size < 16:
        raise InputError("--n must be at least 1 and --size at least 16")
    out = Path(args.out)
    stem = out.with_suffix("") if out.suffix else out
    stack, reference, star = (out if out.suffix else out.with_suffix(".mrcs"),
                              Path(f"{stem}_reference.mrc"), Path(f"{stem}.star"))
    for path in (stack, reference, star):
        check_writable(path)
    try:
        snr = [float(v) for v in str(args.snr).split(",")]
    except ValueError:
        raise InputError(f"--snr must be a number or a comma list of numbers, got "
                         f"'{args.snr}'") from None
    if not all(v > 0 for v in snr):
        raise InputError(f"--snr must be positive, got {snr}")
    if args.max_shift < 0:
        raise InputError(f"--max-shift must be >= 0, got {args.max_shift}")
    if args.background < 0:
        raise InputError(f"--background must be >= 0, got {args.background}")
    template = load_template(args.template, args.size, args.pixel_size, args.max_shift,
                             args.seed)
    synth = ParticleSynth(template, snr=snr, max_shift=args.max_shift, ctf=args.ctf,
                          background=args.background, seed=args.seed,
                          snr_over=args.snr_over)
    # the stack streams to a temporary file that is renamed last; if anything fails, the
    # reference and STAR written before it are removed again: no partial output
    with all_or_nothing() as written:
        _write_cryoem(args, synth, template, stack, reference, star, written)
    print(f"wrote {args.n} particles of {args.size} px ({template.pixel_size:.3g} A/px, SNR "
          f"{'/'.join(f'{v:g}' for v in snr)} over the {args.snr_over}"
          f"{', |CTF|' if args.ctf else ''}) to {stack}, "
          f"the reference to {reference} and the true transforms to {star}")
    return 0


def _write_cryoem(args, synth, template, stack: Path, reference: Path, star: Path,
                  written: list[Path]) -> None:
    angle, tx, ty, defocus = (np.empty(args.n) for _ in range(4))
    with contextlib.ExitStack() as outputs:
        put = outputs.enter_context(mrc_stack_writer(stack, args.n, args.size,
                                                     template.pixel_size))
        bar = outputs.enter_context(tqdm(total=args.n, desc="synth cryoem", unit="particle",
                                         disable=args.quiet))
        start = 0
        for batch in synth.chunks(args.n):
            k = len(batch.images)
            put(start, batch.images)
            for dst, src in ((angle, batch.angle), (tx, batch.tx), (ty, batch.ty),
                             (defocus, batch.defocus_um)):
                dst[start : start + k] = src
            start += k
            bar.update(k)
        write_mrc(reference, template.reference, template.pixel_size, stack=False)
        written.append(reference)
        psi, origin_x, origin_y = geometry.to_relion(geometry.Rigid.of(angle, tx, ty))
        extra = {}
        optics = {}
        if args.ctf:
            extra = {"rlnDefocusU": defocus * 1e4, "rlnDefocusV": defocus * 1e4,
                     "rlnDefocusAngle": 0.0, "rlnCtfPhaseFlipped": 1}
            optics = {"rlnVoltage": 300.0, "rlnSphericalAberration": 2.7,
                      "rlnAmplitudeContrast": 0.1}
        names = [f"{i + 1}@{stack.name}" for i in range(args.n)]
        write_particles_star(star, ParticlePoses(names, psi, origin_x, origin_y,
                                                 template.pixel_size, args.size, extra=extra,
                                                 optics_extra=optics))
        written.append(star)


def natural(args: argparse.Namespace) -> int:
    check_writable(args.out)
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    if args.size < 8:
        raise InputError(f"--size must be at least 8, got {args.size}")
    if args.max_shift < 0:
        raise InputError(f"--max-shift must be >= 0, got {args.max_shift}")
    batch, meta = generate_natural_pairs(
        args.images,
        n=args.n,
        size=args.size,
        noise=args.noise,
        max_shift=args.max_shift,
        seed=args.seed,
        split=args.split,
        test_percent=args.test_percent,
        progress=not args.quiet,
    )
    pairs = Pairs(a=batch.a, b=batch.b, angle=batch.angle, tx=batch.tx, ty=batch.ty, meta=meta)
    write_pairs(args.out, pairs)
    print(f"wrote {pairs.n} pairs of {pairs.size} px ({meta['noise']}) to {args.out}")
    return 0
