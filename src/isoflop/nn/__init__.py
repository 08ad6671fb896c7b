"""Single-device model code. Imports torch, never torch.distributed (parallelism lives in train/parallel.py).

`config.py`, `rope.py` and `counting.py` are pure Python so that counting and planning need no torch.
"""
