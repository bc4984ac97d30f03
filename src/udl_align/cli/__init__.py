"""The ``udl-align`` command: one module per subcommand, each with ``add_args`` and ``main``."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from . import align, demo, evaluate, synth, train

COMMANDS = {
    "synth": synth,
    "train": train,
    "align": align,
    "evaluate": evaluate,
    "demo": demo,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line, exit 2 (argparse's own status)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="udl-align", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0],
                           description=module.__doc__)
        module.add_args(p)
        p.set_defaults(func=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"udl-align {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"udl-align {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
