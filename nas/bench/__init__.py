"""`nas bench`: the project's trainer timed against the usual pipeline (command, timing, baseline),
and each speed setting switched in turn (ablation)."""
