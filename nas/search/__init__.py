"""`nas search`: the command (command), one trial's work (objective), worker processes and signals
(workers), the end-of-run summary (summary), the pruner, the sampler, warm starts and finalists."""
