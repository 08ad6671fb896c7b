"""The one error of bad scaling-law input (laws, fits, bootstrap, frontier, plans, records).

The CLI turns it into exit code 2 and one line naming the option or file it came from.
"""

from __future__ import annotations


class ScienceError(ValueError):
    """Input a scaling-law computation cannot use: one line, with `key` naming the argument, preset key, budget
    or curve at fault ('' when it is the data as a whole)."""

    def __init__(self, problem: str, *, key: str = ""):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)
