"""Names a user types, and what they stand for: recipes, studies, law presets, CLI verbs, variant kinds.

`Registry` is the one lookup (with the one "did you mean"); an entry may be given as "module:attribute" text
and is then imported on first use, so building a registry does no work at import time.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from isoflop.errors import ConfigError

T = TypeVar("T")


def did_you_mean(word: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """An ordered name -> entry table whose lookups fail as one line naming the choices.

    `noun` names what is looked up, e.g. "recipe"; `unknown` overrides the start of the error message
    ("no such recipe or config file")."""

    def __init__(self, noun: str, entries: Mapping[str, T | str] | None = None, *, unknown: str | None = None,
                 sort_choices: bool = False):
        self.noun = noun
        self.sort_choices = sort_choices
        self.unknown = unknown or f"no such {noun}"
        self._entries: dict[str, T | str] = dict(entries or {})

    def register(self, name: str, entry: T | str) -> None:
        """Add `entry` under `name` (replacing an entry of that name: a subclass may redefine a kind)."""
        self._entries[name] = entry

    def get(self, name: str, *, key: str | None = None) -> T:
        """The entry of `name`; else ConfigError(key or name, ...) with a suggestion and the choices."""
        if name not in self._entries:
            shown = sorted(self.names()) if self.sort_choices else self.names()
            named = "" if key is None else f" {name!r}"  # the error's key names it otherwise
            raise ConfigError(str(name) if key is None else key, f"{self.unknown}{named}"
                              f"{did_you_mean(name, self.names())}; choose from {', '.join(shown)}")
        entry = self._entries[name]
        if isinstance(entry, str):  # "module:attribute": imported now, once
            module, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module), attribute)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs, every entry resolved."""
        return [(name, self.get(name)) for name in self._entries]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
