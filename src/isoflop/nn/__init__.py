"""Single-device model code. Imports torch but never its distributed package: parallelism is applied from
outside, in train/parallel.py.

`config.py`, `rope.py` and `counting.py` are pure Python so that counting and planning need no torch.
"""
