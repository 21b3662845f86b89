"""`python -m nas.bench ...`: the same as `nas bench ...`."""

from ..cli import run_command

run_command("bench")
