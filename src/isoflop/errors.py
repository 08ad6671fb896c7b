"""The one error type of bad input. The CLI turns it into exit code 2 and one line on stderr."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad input value; `key` names it: a dotted config key, an option, a file or a folder ('' for the whole)."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)

    def under(self, prefix: str) -> ConfigError:
        """The same error with `prefix.` put in front of its key."""
        return ConfigError(f"{prefix}.{self.key}" if self.key else prefix, self.problem)
