"""The ``udl-align`` command: one module per subcommand, each with ``add_args`` and ``main``."""

from __future__ import annotations

import argparse
import sys

from udl_align.allocator import keep_freed_memory
from udl_align.cli import align, demo, evaluate, synth, train
from udl_align.errors import InputError, one_line_warnings

DESCRIPTION = ("Unsupervised rigid alignment of noisy images (UDL): make synthetic data, train a "
               "network without labels, align pairs or particle stacks, score the estimates. "
               "Run 'udl-align demo' for the main job on built-in defaults.")

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
    parser = _Parser(prog="udl-align", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module in COMMANDS.items():
        text = module.__doc__.replace("``", "")
        p = sub.add_parser(name, help=first_sentence(text), description=text)
        module.add_args(p)
        p.set_defaults(func=module.main)
    return parser


def first_sentence(text: str) -> str:
    paragraph = " ".join(text.split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".") + "."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # batches reuse the heap's memory instead of fresh pages
    try:
        with one_line_warnings(f"udl-align {args.command}"):  # a non-standard input: one line
            return int(args.func(args) or 0)
    except InputError as err:
        print(f"udl-align {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"udl-align {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
