"""The `nas` command: one parser per command behind `nas COMMAND` and `python -m nas.COMMAND`, complete help."""

import argparse
import subprocess
import sys

import pytest

from conftest import ROOT, one_line_error
from nas.cli import COMMANDS, Parser, command_parser, description


@pytest.mark.parametrize("name", COMMANDS)
def test_every_help_is_complete(name):
    module, parser = command_parser(name)
    text = description(module)
    assert text.endswith(".") and "\n" not in text and len(text) > 40, text  # a whole sentence
    for action in parser._actions:  # noqa: SLF001 (argparse has no public list of its actions)
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        assert action.help and not action.help.endswith((",", "(", " a", " the")), action.option_strings
        if action.default is not None and action.default is not False:
            assert "default" in parser._get_formatter()._format_action(action), action.option_strings
    assert "evaluate" not in name or "where to evaluate" in parser.format_help()


@pytest.mark.slow  # three interpreters that import torch: 5 s
def test_console_command_lists_commands_and_shares_their_parsers(tmp_path):
    nas = [sys.executable, "-m", "nas"]
    listing = subprocess.run([*nas, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert listing.returncode == 0, listing.stderr
    for name in COMMANDS:
        assert f"    {name}" in listing.stdout
    for how in ([*nas, "search"], [sys.executable, "-m", "nas.search"]):
        result = subprocess.run([*how, "--budget", "-1"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert one_line_error(result).startswith("nas search: error: argument --budget: expected a positive integer")


def test_parser_errors_are_one_line(capsys):
    parser = Parser(prog="nas x")
    parser.add_argument("--n", type=int)
    parser.add_argument("--m", required=True)
    for argv, message in ((["--n", "x", "--m", "1"], "argument --n: invalid int value: 'x'"),
                          ([], "the following arguments are required: --m"),
                          (["--m", "1", "--bogus"], "unrecognized arguments: --bogus")):
        with pytest.raises(SystemExit) as exit:
            parser.parse_args(argv)
        out, err = capsys.readouterr()
        line = one_line_error(subprocess.CompletedProcess(argv, exit.value.code, out, err))  # status 2, no traceback
        assert line == f"nas x: error: {message} (see --help)\n" and out == "", (out, err)
