"""`nas report`: the self-contained HTML page (command), the figures drawn from the trial records
(figures) and Optuna's figures of the sampled choices (choices)."""
