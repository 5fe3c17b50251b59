"""Command line: ``semievol {train,eval,data,demo}``. One module per command in
``semievol.commands``; every config field is a flag ``--section.field`` with its docstring as help.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

from semievol.config import SECTIONS, Config, field_docs, load_config, parse_cli_value, type_name
from semievol.errors import Interrupted, SemievolError
from semievol.library_noise import dependency_noise_routed

COMMANDS = {
    # name: (module, help, sections whose flags it takes)
    "train": (
        "semievol.commands.train",
        "LoRA SFT on the labeled data (in-weight propagation)",
        ("data", "task", "model", "train"),
    ),
    "eval": (
        "semievol.commands.evaluate",
        "evaluate Vanilla and adapters on the test data",
        ("data", "task", "model", "eval"),
    ),
    "data": (
        "semievol.commands.data_check",
        "validate and summarise data: semievol data check",
        ("data", "task"),
    ),
    "run": (
        "semievol.commands.run",
        "the SemiEvol pipeline: SFT, pseudo-labeling, selection, evolve, evaluation, report",
        (
            "data",
            "task",
            "model",
            "train",
            "eval",
            "pipeline",
            "in_context",
            "committee",
            "selection",
        ),
    ),
    "demo": (
        "semievol.commands.demo",
        "offline demo: the SemiEvol pipeline on a sample task with the bundled model",
        ("model", "train", "pipeline", "in_context", "committee", "selection"),
    ),
}


def _add_section_flags(parser: argparse.ArgumentParser, sections: Sequence[str]) -> None:
    import typing

    for section in sections:
        cls = SECTIONS[section]
        group = parser.add_argument_group(f"{section} settings (YAML section `{section}:`)")
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            help_text = f"{docs.get(f.name, '')} [{type_name(hints[f.name])}; default: {default}]"
            group.add_argument(
                f"--{section}.{f.name}",
                dest=f"{section}.{f.name}",
                metavar="V",
                default=argparse.SUPPRESS,
                help=help_text.replace("%", "%%"),
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semievol",
        description="Semi-supervised fine-tuning of LLMs (SemiEvol). Settings come from --config "
        "YAML files and --section.field flags (flags win).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show the warnings and log records of the libraries underneath",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, sections) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "data":
            p.add_argument(
                "action", choices=["check"], help="check: validate every configured split"
            )
        p.add_argument("--config", help="YAML config file (one section per settings group below)")
        if name in ("run", "demo"):
            p.add_argument(
                "--force",
                metavar="STAGE",
                help="re-run this stage and every stage after it (e.g. committee, select, sft)",
            )
        if name == "demo":
            p.add_argument(
                "--out", default="runs/demo", help="run directory of the demo [default: runs/demo]"
            )
        _add_section_flags(p, sections)
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {k: parse_cli_value(v) for k, v in vars(args).items() if "." in k}


def resolve(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Config:
    return load_config(args.config, overrides_from(args), base=base)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with dependency_noise_routed(verbose=args.verbose):
        return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.quiet:
        import os

        os.environ["TQDM_DISABLE"] = "1"
    import importlib
    import signal

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (schedulers, `kill`) stops as cleanly as Ctrl-C

    signal.signal(signal.SIGTERM, terminate)
    try:
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except SemievolError as e:
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except OSError as e:
        # Disk full, read-only or vanished folders: one line, and what was finished is kept.
        where = f" ({e.filename})" if e.filename else ""
        print(
            f"error: {e.strerror or e}{where}; finished stages and items are kept: fix this and "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as e:
        message = str(e) if isinstance(e, Interrupted) else ""
        print(
            message
            or "interrupted; finished artifacts are kept, re-run the same command to redo the rest",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
