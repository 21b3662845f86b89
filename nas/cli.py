"""The `nas` command and what every subcommand shares: one parser per command, one error prefix.

`nas search ...` and `python -m nas.search ...` are the same command: the same parser (built by the
command module's `add_arguments`), the same flags and the same `nas search: error: ...` line for
bad input, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Callable, NoReturn

from .errors import EXPECTED_ERRORS

# command -> (module, one-line summary for `nas --help`): each module has `add_arguments(parser)` and
# `run(args) -> int`, and its docstring's first paragraph is the command's description. A command's
# module is imported only when that command runs (or shows its own --help): torch takes seconds.
COMMANDS = {
    "search": ("nas.search.command", "search a space for the most accurate network under a parameter budget"),
    "export": ("nas.export", "write the spec file of a study's best trial, or of trial N"),
    "retrain": ("nas.retrain", "train a spec with several seeds and report its final-epoch test accuracy"),
    "evaluate": ("nas.evaluate", "the test accuracy, per-digit accuracy and confusion matrix of a checkpoint"),
    "report": ("nas.report.command", "write a self-contained HTML page of what a search tried and found"),
    "bench": ("nas.bench.command", "time the project's trainer against the pipeline people usually write"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it has none worth saying or says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or quiet or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`nas search: error: ...`), not a usage dump."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def description(module: ModuleType) -> str:
    """The first paragraph of a module's docstring, as one line."""
    paragraph = (module.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def command_parser(name: str) -> tuple[ModuleType, Parser]:
    module = importlib.import_module(COMMANDS[name][0])
    parser = Parser(prog=f"nas {name}", description=description(module))
    module.add_arguments(parser)
    return module, parser


def _run(prog: str, module: ModuleType, args: argparse.Namespace) -> NoReturn:
    run_script(prog, lambda: module.run(args))


def run_script(prog: str, main: Callable[[], int | None]) -> NoReturn:
    """Run a command (or a script under benchmarks/): expected errors become one line on stderr and
    exit status 2; `main`'s return value is the exit status."""
    try:
        code = main()
    except EXPECTED_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = 2
    except FloatingPointError as exc:  # a training that diverged: the run failed, the input was fine
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def run_command(name: str, argv: list[str] | None = None) -> NoReturn:
    """`python -m nas.<name> ...`: the command's own parser."""
    module, parser = command_parser(name)
    _run(parser.prog, module, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> NoReturn:
    """`nas COMMAND ...`: every command behind one program; only the command that runs is imported."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        run_command(argv[0], argv[1:])
    top = Parser(prog="nas", description="Neural architecture search for the most accurate CNN under a hard "
                                         "parameter budget (MNIST). Each command has its own --help.")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, (_, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary)
    top.parse_args(argv)  # --help, or a missing or unknown command: argparse says so and exits
    top.error("expected a command")


# ------------------------------------------------------------------ argument types and shared flags


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_device_args(parser: argparse.ArgumentParser, doing: str = "train") -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help=f"where to {doing} (auto: CUDA if available)")
    parser.add_argument("--data-dir", help="directory holding MNIST/raw (default: $NAS_DATA_DIR, else ./data)")
    parser.add_argument("--download", action="store_true", help="download MNIST into the data dir if it is missing")


def add_study_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--study", required=required,
                        help="study name" + ("" if required else " (default: <space>-b<budget>)"))
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<studies dir>/<study>.db)")
    parser.add_argument("--studies-dir",
                        help="where studies and their outputs live (default: $NAS_STUDIES_DIR, else ./studies)")
