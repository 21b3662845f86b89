"""`python -m nas.search ...`: the same as `nas search ...`."""

from ..cli import run_command

run_command("search")
