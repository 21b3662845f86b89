"""`nas report`: the HTML page (command), the figures drawn from the trial records (figures), Optuna's
figures of the sampled choices (choices), the one shared plotly.js per folder (plotlyjs) and the trials
as CSV (trials_csv)."""
