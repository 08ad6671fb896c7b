"""The run directory contract, torch-free: the layout and its checks (layout.py), the typed run record
(record.py), the metrics log (metrics.py) and the atomic writers (atomic.py). No other module spells a
run-directory file name.
"""

from isoflop.rundir.layout import RunDir, find_runs, first_difference, step_of
from isoflop.rundir.metrics import EVAL, TRAIN, MetricsLog
from isoflop.rundir.record import POINT_KEYS, RECORD_VERSION, RunRecord

__all__ = ["EVAL", "POINT_KEYS", "RECORD_VERSION", "TRAIN", "MetricsLog", "RunDir", "RunRecord", "find_runs",
           "first_difference", "step_of"]
