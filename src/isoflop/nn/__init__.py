"""Single-device model code. Imports torch but never its distributed package: parallelism is applied from
outside, in train/parallel.py.

The config modules (`config.py` and the variant families `ffn_config.py`, `mod_config.py`, `rope.py`,
`layout_config.py`, `attention_config.py`, `head_config.py`) and `counting.py` are pure Python, so that
counting and planning need no torch; the modules they build import torch when called.
"""
