"""Sweeps: from a set of compute budgets to a scaling law fitted on the user's own runs.

`isoflop sweep plan|run|status|fit|report|predict`. spec.py (the sweep.toml schema), grid.py (the runs of a
spec), layout.py (the sweep folder), execution (run_one.py, local.py, slurm.py, status.py), the fit and the
report (fit.py, report.py, predict.py). docs/sweeps.md is the user's guide.
"""
