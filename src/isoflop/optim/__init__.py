"""Optimizers and schedules. `Lion` and `Tiger` are imported lazily, so `import isoflop.optim` (and
`isoflop.optim.config`) needs no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isoflop.optim.lion import Lion
    from isoflop.optim.tiger import Tiger

__all__ = ["Lion", "Tiger"]


def __getattr__(name: str) -> Any:
    if name == "Lion":
        from isoflop.optim.lion import Lion

        return Lion
    if name == "Tiger":
        from isoflop.optim.tiger import Tiger

        return Tiger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
