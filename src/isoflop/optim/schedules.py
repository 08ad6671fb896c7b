"""Learning-rate schedules: a multiplier of the peak lr for each optimizer step s = 0 .. total - 1.

Every kind warms up linearly over W steps: step s < W gets (s + 1) / W. W is `warmup_steps` when set (an
absolute count, so runs of different lengths share it: a WSD cooldown forked from a longer run's checkpoint
has that run's warmup), else `warmup` times the run's steps. `floor` is the final multiplier (the minimum lr
as a fraction of the peak). `check(total_steps)` refuses, at plan time, a warmup that does not fit the run.
"""

from __future__ import annotations

import math
from typing import Literal

from isoflop.config import Variant, config, require


@config
class ScheduleConfig(Variant, family=True):
    default_kind = "cosine"
    warmup: float = 0.0
    """Fraction of the run's steps spent warming up linearly from 0 to the peak (ignored when warmup_steps is set)."""
    warmup_steps: int | None = None
    """Warmup in optimizer steps, replacing the fraction `warmup` when set (must be below the run's steps)."""

    def __post_init__(self) -> None:
        require(0 <= self.warmup < 1, "warmup", f"must be a fraction in [0, 1), got {self.warmup}")
        require(self.warmup_steps is None or self.warmup_steps >= 0, "warmup_steps",
                f"must be a non-negative number of steps, got {self.warmup_steps}")

    def warmup_length(self, total_steps: int) -> int:
        """W, the warmup steps of a run of `total_steps`."""
        return self.warmup_steps if self.warmup_steps is not None else round(self.warmup * total_steps)

    def check(self, total_steps: int) -> None:
        """ConfigError (key relative to the schedule) unless the warmup fits a run of `total_steps`."""
        require(self.warmup_steps is None or self.warmup_steps < total_steps, "warmup_steps",
                f"{self.warmup_steps} warmup steps do not fit the run's {total_steps} steps")

    def multiplier(self, step: int, total_steps: int) -> float:
        warm = self.warmup_length(total_steps)
        if step < warm:
            return (step + 1) / warm
        return self.after_warmup(step - warm, total_steps - warm)

    def after_warmup(self, step: int, steps: int) -> float:
        """Multiplier at `step` of the `steps` that follow warmup."""
        raise NotImplementedError


def _check_floor(floor: float) -> None:
    require(0 <= floor <= 1, "floor", f"must be in [0, 1], got {floor}")


@config
class ConstantSchedule(ScheduleConfig):
    kind = "constant"

    def after_warmup(self, step: int, steps: int) -> float:
        return 1.0


@config
class LinearSchedule(ScheduleConfig):
    """Linear decay from the peak to `floor` at the last step."""

    kind = "linear"
    floor: float = 0.0
    """Final multiplier."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_floor(self.floor)

    def after_warmup(self, step: int, steps: int) -> float:
        progress = step / max(steps - 1, 1)
        return 1.0 - (1.0 - self.floor) * progress


@config
class CosineSchedule(ScheduleConfig):
    """Half-cosine from the peak to `floor` (Loshchilov & Hutter 2017), planned over `stretch` times the run.

    stretch > 1 plans the cosine for more steps than are run, so it ends above the floor: the setting whose
    cost Hoffmann et al. 2022 (App. B, Fig. A1) measured ("a cosine cycle longer than the run hurts").
    """

    kind = "cosine"
    floor: float = 0.1
    """Multiplier the cosine decays to (Chinchilla: 0.1, i.e. 10x below the peak)."""
    stretch: float = 1.0
    """Cosine length as a multiple of the post-warmup steps actually run (>= 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_floor(self.floor)
        require(self.stretch >= 1, "stretch", f"must be at least 1, got {self.stretch}")

    def after_warmup(self, step: int, steps: int) -> float:
        planned = max(self.stretch * (steps - 1), 1.0)
        progress = min(step / planned, 1.0)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@config
class WSDSchedule(ScheduleConfig):
    """Warmup-stable-decay (Hu et al. 2024, MiniCPM): the peak until the last `decay` fraction of the run,
    then a decay to `floor`."""

    kind = "wsd"
    decay: float = 0.2
    """Fraction of the run's steps spent decaying at the end."""
    floor: float = 0.0
    """Final multiplier."""
    shape: Literal["linear", "sqrt", "cosine"] = "linear"
    """Decay curve: linear, 1 - sqrt (Hägele et al. 2024), or half-cosine."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_floor(self.floor)
        require(0 < self.decay <= 1, "decay", f"must be a fraction in (0, 1], got {self.decay}")
        require(self.warmup_steps is not None or self.warmup + self.decay <= 1, "decay",
                "warmup + decay exceed the whole run")

    def decay_length(self, total_steps: int) -> int:
        """The decay steps of a run of `total_steps` (at least one); the decay starts at total - this."""
        return max(round(self.decay * total_steps), 1)

    def check(self, total_steps: int) -> None:
        super().check(total_steps)
        if self.warmup_steps is not None:
            require(self.warmup_steps + self.decay_length(total_steps) <= total_steps, "warmup_steps",
                    f"{self.warmup_steps} warmup steps and {self.decay_length(total_steps)} decay steps exceed "
                    f"the run's {total_steps} steps")

    def multiplier(self, step: int, total_steps: int) -> float:
        warm = self.warmup_length(total_steps)
        decay_steps = self.decay_length(total_steps)
        decay_start = total_steps - decay_steps
        if step < warm:
            return (step + 1) / warm
        if step < decay_start:
            return 1.0
        progress = (step - decay_start + 1) / decay_steps
        shaped = {"linear": progress, "sqrt": math.sqrt(progress),
                  "cosine": 0.5 * (1 - math.cos(math.pi * progress))}[self.shape]
        return 1.0 - (1.0 - self.floor) * shaped


@config
class ConstantCooldownSchedule(WSDSchedule):
    """Constant at the peak, then a final cooldown to `floor` over the last `decay` fraction of the run.

    This is exactly warmup-stable-decay, so it is WSD under the name the literature also uses for it
    (Hägele et al. 2024, "constant LR with cooldown"): the same knobs (`decay` is the cooldown fraction,
    `shape` its curve) and the same multipliers; only the `kind` differs.
    """

    kind = "constant_cooldown"


@config
class InverseSqrtSchedule(ScheduleConfig):
    """Inverse square root (Vaswani et al. 2017; T5): after warmup the multiplier is sqrt(W / n) for the
    n-th step (n = step + 1), W = max(warmup steps, 1), so it is 1 at the end of warmup and falls as
    1 / sqrt(n). An optional cooldown over the last `cooldown` fraction of the run then decays linearly
    from the value reached there to `floor` at the last step (Zhai et al. 2022's rsqrt + cooldown).
    """

    kind = "inverse_sqrt"
    cooldown: float = 0.0
    """Fraction of the run's steps spent in the final linear cooldown (0 = none: the 1/sqrt curve to the end)."""
    floor: float = 0.0
    """Multiplier at the last step of the cooldown (unused without one)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_floor(self.floor)
        require(0 <= self.cooldown <= 1, "cooldown", f"must be a fraction in [0, 1], got {self.cooldown}")
        require(self.warmup_steps is not None or self.warmup + self.cooldown <= 1, "cooldown",
                "warmup + cooldown exceed the whole run")

    def check(self, total_steps: int) -> None:
        super().check(total_steps)
        cool = round(self.cooldown * total_steps)
        require(self.warmup_steps is None or self.warmup_steps + cool <= total_steps, "warmup_steps",
                f"{self.warmup_steps} warmup steps and {cool} cooldown steps exceed the run's {total_steps} steps")

    def _rsqrt(self, step: int, warm: int) -> float:
        return math.sqrt(max(warm, 1) / (step + 1))

    def multiplier(self, step: int, total_steps: int) -> float:
        warm = self.warmup_length(total_steps)
        if step < warm:
            return (step + 1) / warm
        cool_steps = round(self.cooldown * total_steps)
        cool_start = total_steps - cool_steps
        if cool_steps == 0 or step < cool_start:
            return self._rsqrt(step, warm)
        start = self._rsqrt(cool_start - 1, warm) if cool_start > warm else 1.0
        progress = (step - cool_start + 1) / cool_steps
        return start + (self.floor - start) * progress
