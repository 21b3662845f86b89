"""The `nas` command and what every subcommand shares: one parser per command, one error prefix.

`nas search ...` and `python -m nas.search ...` are the same command: the same parser (built by the
command module's `add_arguments`), the same flags and the same `nas search: error: ...` line for
bad input, with exit status 2.

Exit statuses, every command: 0 done; 1 the run failed though the input was fine (a diverged training,
an export that does not reproduce the logits, a worker process that crashed, nothing to retrain);
2 bad input, missing or corrupt files; 3 the study's storage stopped answering for longer than a worker
waits (NAS_STORAGE_RETRY_SECONDS); 4 a full disk (ENOSPC) or quota (EDQUOT); 128 + N stopped by
signal N (130 SIGINT, 143 SIGTERM). Errors 2-4 are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Callable, NoReturn

from .errors import EXPECTED_ERRORS, StorageError, disk_full

# command -> (module, one-line summary for `nas --help`): each module has `add_arguments(parser)` and
# `run(args) -> int`, and its docstring's first paragraph is the command's description. A command's
# module is imported only when that command runs (or shows its own --help): torch takes seconds.
COMMANDS = {
    "search": ("nas.search.command", "search a space for the most accurate network under a parameter budget"),
    "export": ("nas.export", "write the spec file of a study's best trial (or trial N), or a checkpoint's ONNX files"),
    "retrain": ("nas.retrain", "train a spec with several seeds and report its final-epoch test accuracy"),
    "evaluate": ("nas.evaluate", "the test accuracy, per-digit accuracy and confusion matrix of a checkpoint"),
    "report": ("nas.report.command", "write an HTML page (and with --csv a table) of what a search tried and found"),
    "bench": ("nas.bench.command", "time the project's trainer against the pipeline people usually write"),
    "list": ("nas.catalog", "list the bundled spaces, reference designs and found models, and the studies in a folder"),
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


def version_line() -> str:
    """`nas-budget 0.1.0`, with the commit when it runs from a checkout: `nas-budget 0.1.0 (commit 1a2b3c4d5e6f)`."""
    from .version import __version__, commit

    where = commit()
    return f"nas-budget {__version__}" + (f" (commit {where})" if where else "")


class VersionAction(argparse.Action):
    """`nas --version`: the version line on stdout, exit 0 (the commit is asked of git only then)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        print(version_line())
        parser.exit(0)


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
    """Run a command (or a script under benchmarks/): expected errors become one line on stderr and their
    exit status (the module's docstring); `main`'s return value is the exit status."""
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        code = error_status(exc)
        if code is None:
            raise
        full = disk_full(exc)  # before the rest: a full disk may also surface as a refused storage URL
        if full is not None:
            print(f"{prog}: error: {full}; free some space, then run the same command again", file=sys.stderr)
        else:
            print(f"{prog}: error: {exc}", file=sys.stderr)
    sys.exit(code)


def error_status(exc: BaseException) -> int | None:
    """The exit status of an expected error (None: a bug, which keeps its traceback)."""
    if disk_full(exc) is not None:
        return 4
    if isinstance(exc, EXPECTED_ERRORS):
        return 2
    if isinstance(exc, StorageError):
        return 3
    if isinstance(exc, FloatingPointError):  # a training that diverged: the run failed, the input was fine
        return 1
    return None


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
    top.add_argument("--version", action=VersionAction, help="print the version (and the git commit of a checkout)")
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


def size(text: str) -> int:
    """A positive count or size: 20000, 20k, 1.5M, 64KB, 1MiB (nas.cost.parse_size)."""
    from .cost import parse_size  # torch: imported only by the commands that take a size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device_budget_args(parser: argparse.ArgumentParser, refused: str) -> None:
    """--max-macs, --max-ram and --max-flash, parsed alike wherever a command takes them; `refused`: what happens to
    a model over one ("a candidate above is rejected before any training")."""
    for flag, what in (("--max-macs", "multiply-accumulates per image (fvcore's count)"),
                       ("--max-ram", "bytes of peak activation RAM of one inference at int8"),
                       ("--max-flash", "bytes of the int8 model's weights, biases and quantisation parameters")):
        parser.add_argument(flag, type=size, metavar="SIZE",
                            help=f"at most this many {what}; {refused}. 20000, 20k, 1.5M, 64KB (k, M, G, KB, MB: "
                                 "1000s), 1MiB (KiB, MiB, GiB: 1024s); combinable")


def add_device_args(parser: argparse.ArgumentParser, doing: str = "train") -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help=f"where to {doing} (auto: CUDA if available)")
    parser.add_argument("--data", metavar="NAME|PATH",
                        help="the images: a built-in set (mnist, fashion-mnist, kmnist, emnist-balanced, cifar10, "
                             "svhn), a folder with one subfolder of images per class, or an .npz (default: mnist)")
    parser.add_argument("--data-dir", help="directory the built-in sets live in, e.g. MNIST/raw "
                                           "(default: $NAS_DATA_DIR, else ./data)")
    parser.add_argument("--download", action="store_true",
                        help="download the built-in set into the data dir if it is missing")
    parser.add_argument("--image-size", type=positive_int, metavar="N",
                        help="resize the images to N x N (default: the data's own size)")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="1: grey, 3: colour (default: the data's own)")
    parser.add_argument("--val-size", type=positive_int, metavar="N",
                        help="validation images carved from the training images (default: 5,000 for MNIST, else "
                             "10%% of the training images, at most 5,000)")


def add_study_args(parser: argparse.ArgumentParser, required: bool = True,
                   default: str | None = "<space>-b<budget>; on other data than MNIST <space>-<data>-b<budget>"
                   ) -> None:
    parser.add_argument("--study", required=required,
                        help="study name" + ("" if required or default is None else f" (default: {default})"))
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<studies dir>/<study>.db)")
    parser.add_argument("--studies-dir",
                        help="where studies and their outputs live (default: $NAS_STUDIES_DIR, else ./studies)")
