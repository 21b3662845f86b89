"""`python -m nas COMMAND ...`: the same as the `nas` console command."""

from .cli import main

main()
