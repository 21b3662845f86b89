"""`python -m nas.report ...`: the same as `nas report ...`."""

from ..cli import run_command

run_command("report")
