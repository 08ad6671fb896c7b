"""`--init-from RUN[@STEP]`: a new run whose initial weights come from another run's checkpoint.

The new run has its own config (another horizon or schedule for a cooldown fork, a longer `seq_len` with RoPE
scaling, another corpus for fine-tuning); only the tensors must fit: every tensor of the new model must be in
the checkpoint with the same shape and nothing else may be there (ConfigError naming the first that is not).
Optionally it also takes over

- `optimizer`: the optimizer's state (moments, step counts). The hyperparameters stay the new config's.
- `data`: the source's trajectory from that step: the step count, the loader's position, torch's RNG, the
  clocks and the metrics log up to the step. The new run continues at step STEP + 1, so a WSD fork from a
  trunk's stable phase (with `optimizer` too) is the same run, bit for bit, as one trained uninterrupted to
  the fork's horizon (tests/train/test_init_from.py). Its record's seconds then include the source's up to
  STEP (its init record keeps those, so a run's own seconds are its record's minus them).

The run keeps its source in its init record (RunDir.write_init: InitSource.to_dict). A resumed run continues
from its own newest checkpoint; one killed before its first checkpoint starts from the source again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from isoflop.config import ConfigError
from isoflop.data.loader import TrainLoader
from isoflop.rundir import RunDir, step_of
from isoflop.train import checkpoint, parallel


@dataclass(frozen=True)
class InitFrom:
    """What a new run starts from: run `run`'s checkpoint at `step` (None: its newest)."""

    run: str | Path
    """The source run directory."""
    step: int | None = None
    """The checkpoint step; None: the newest one there when the run starts."""
    optimizer: bool = False
    """Also take the optimizer state (the new config's hyperparameters still apply)."""
    data: bool = False
    """Also continue the source's trajectory: step count, loader position, RNG, clocks, metrics up to the step."""

    @classmethod
    def parse(cls, text: str, *, optimizer: bool = False, data: bool = False) -> InitFrom:
        """RUN or RUN@STEP (a run folder whose own name holds an '@' is taken whole when it exists)."""
        path, at, step = text.rpartition("@")
        if not at or (not step.isdigit() and Path(text).exists()):
            return cls(text, None, optimizer, data)
        if not step.isdigit() or not path:
            raise ConfigError("--init-from", f"expected RUN or RUN@STEP (STEP a whole number), got {text!r}")
        return cls(path, int(step), optimizer, data)

    def resolve(self) -> InitSource:
        """The concrete source (its step decided); ConfigError when the run or the checkpoint is not there."""
        if self.step is not None and (isinstance(self.step, bool) or not isinstance(self.step, int) or self.step <= 0):
            raise ConfigError("--init-from", f"the step must be a positive whole number, got {self.step!r}")
        source = RunDir(self.run).require_run()
        folder = source.checkpoint(self.step)
        state = checkpoint.read_state(folder)
        return InitSource(run=str(source.path.resolve()), step=step_of(folder), optimizer=self.optimizer,
                          data=self.data, training_s=float(state.get("elapsed_s", 0.0)),
                          wall_s=float(state.get("wall_s", state.get("elapsed_s", 0.0))))

    def difference(self, recorded: InitSource) -> str | None:
        """The first field where this request and a run's recorded source differ (None: the same source)."""
        if Path(self.run).resolve() != Path(recorded.run):
            return f"run {str(Path(self.run).resolve())!r} (recorded {recorded.run!r})"
        if self.step is not None and self.step != recorded.step:
            return f"step {self.step} (recorded {recorded.step})"
        for name in ("optimizer", "data"):
            if getattr(self, name) != getattr(recorded, name):
                return f"{name}={getattr(self, name)} (recorded {getattr(recorded, name)})"
        return None


@dataclass(frozen=True)
class InitSource:
    """A resolved InitFrom, as the run's init record (RunDir.read_init) holds it."""

    run: str
    """The source run directory, absolute."""
    step: int
    optimizer: bool
    data: bool
    training_s: float = 0.0
    """The source's training seconds at `step`."""
    wall_s: float = 0.0
    """The source's wall seconds at `step`."""

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "step": self.step, "optimizer": self.optimizer, "data": self.data,
                "training_s": self.training_s, "wall_s": self.wall_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str) -> InitSource:
        try:
            return cls(run=str(data["run"]), step=int(data["step"]), optimizer=bool(data["optimizer"]),
                       data=bool(data["data"]), training_s=float(data.get("training_s", 0.0)),
                       wall_s=float(data.get("wall_s", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(where, f"not an init record ({e.__class__.__name__}: {e})") from None

    @property
    def checkpoint(self) -> Path:
        """The source checkpoint folder; ConfigError when it is gone."""
        return RunDir(self.run).checkpoint(self.step)

    def describe(self) -> str:
        taken = ["weights"] + [name for name in ("optimizer", "data") if getattr(self, name)]
        return f"{self.run}@{self.step} ({', '.join(taken)})"


@dataclass(frozen=True)
class Start:
    """Where training starts after initialising: the step and the clocks' seconds."""

    step: int = 0
    training_s: float = 0.0
    wall_s: float = 0.0


def check_tensors(model: nn.Module, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """ConfigError naming the first tensor of `model` missing from `shapes` or shaped otherwise, or the first
    tensor of `shapes` that `model` has no place for."""
    mine = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    for name, shape in mine.items():
        if name not in shapes:
            raise ConfigError(where, f"tensor {name} of this model is not in the checkpoint")
        if shapes[name] != shape:
            raise ConfigError(where, f"tensor {name} has shape {list(shapes[name])} in the checkpoint, "
                                     f"{list(shape)} in this model")
    extra = [name for name in shapes if name not in mine]
    if extra:
        raise ConfigError(where, f"tensor {extra[0]} of the checkpoint has no place in this model")


def initialise(source: InitSource, *, raw_model: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
               loader: TrainLoader, optimizer_kind: str) -> Start:
    """Load `source` into a freshly built model (and optimizer and loader); where training starts."""
    folder = source.checkpoint
    where = str(folder)
    check_tensors(raw_model, checkpoint.tensor_shapes(folder), where)
    if source.optimizer:
        saved_kind = RunDir(source.run).read_config().get("optim", {}).get("kind")
        if saved_kind != optimizer_kind:
            raise ConfigError(where, f"--init-optimizer: the source's optimizer is {saved_kind}, this run's "
                                     f"{optimizer_kind}")
    model_state, optim_state, state = checkpoint.load(folder, with_optimizer=source.optimizer)
    hyper = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        parallel.load_full_state(model, optimizer, model_state, optim_state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise ConfigError(where, f"the checkpoint's state does not load into this run ({e})") from None
    for group, own in zip(optimizer.param_groups, hyper, strict=True):
        group.update(own)  # the moments are the source's; lr, betas, weight decay the new config's
    if not source.data:
        return Start()
    try:
        loader.load_state_dict(state["loader"])
    except ValueError as e:
        raise ConfigError(where, f"--init-data: {e}") from None
    torch.set_rng_state(state["rng"]["torch"])
    return Start(step=state["step"], training_s=source.training_s, wall_s=source.wall_s)
