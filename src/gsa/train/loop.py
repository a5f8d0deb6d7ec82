"""Building blocks of the training loop: device, optimizer, schedule, steps, evaluation, RNG, signals."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .distributed import DistInfo
from .errors import ConfigError
from .metrics import Meter
from .precision import Precision


# --------------------------------------------------------------------------- device
def resolve_device(name: str, dist: Optional[DistInfo] = None) -> torch.device:
    """``auto`` -> CUDA if available else CPU; with DDP on CUDA, ``cuda:LOCAL_RANK``."""
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available in this PyTorch build/machine")
        if dist is not None and dist.enabled:
            device = torch.device("cuda", dist.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: MPS is not available on this machine")
    return device


# --------------------------------------------------------------------------- optimisation
def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (coupled L2 weight decay, as in the paper's code), AdamW or SGD with momentum."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}")


class _Schedule:
    """LR factor per step: linear warm-up over ``warmup`` steps (from ``1/warmup`` to 1), then
    constant or a cosine decay that reaches 0 at step ``total``."""

    def __init__(self, kind: str, total: int, warmup: int = 0) -> None:
        self.kind, self.total, self.warmup = kind, max(1, total), max(0, min(warmup, total))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        t = (min(step, self.total) - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: ``warmup_epochs`` of linear warm-up, then constant, or a cosine that
    decays to 0 at ``epochs * steps_per_epoch`` optimizer steps.

    ``--max-steps`` only caps the run; it does not change the schedule, so a capped run
    resumed without the cap follows exactly the uninterrupted schedule.
    """
    if cfg.scheduler not in ("constant", "cosine"):
        raise ConfigError(f"unknown scheduler {cfg.scheduler!r}")
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    fn: Callable[[int], float] = _Schedule(cfg.scheduler, cfg.epochs * steps_per_epoch, warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def compute_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in fp32, outside autocast (stable under fp16/bf16)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.cross_entropy(logits.float(), labels)


# --------------------------------------------------------------------------- inputs
def make_prepare(mean: Optional[tuple[float, ...]], std: Optional[tuple[float, ...]], device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-channel normalisation ``(x - mean) / std`` on ``device`` (identity without stats).

    Applied after any rotation, so the zero fill of rotated [0, 1] images stays "black".
    """
    if mean is None or std is None:
        return lambda x: x
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return (x.to(device, torch.float32, non_blocking=True) - m) / s

    return prepare


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    precision: Precision,
    device: torch.device,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[Meter, bool]:
    """Loss/accuracy sums of this process (not yet reduced) and whether it was cut short."""
    was_training = model.training
    model.eval()
    meter = Meter()
    stopped = False
    try:
        for x, y in batches:
            if should_stop():
                stopped = True
                break
            x = prepare(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            with precision.autocast():
                out = model(x)
            logits = out.float()
            meter.add(logits, y, compute_loss(logits, y))
    finally:
        model.train(was_training)
    return meter, stopped


# --------------------------------------------------------------------------- RNG state
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state(device: torch.device) -> dict[str, Any]:
    """RNG states as tensors/ints only (loadable with ``torch.load(weights_only=True)``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _py_state_to_tensor(random.getstate()),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    random.setstate(_py_state_from_tensor(state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _py_state_to_tensor(st: tuple) -> dict[str, Any]:
    version, internal, gauss = st
    return {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _py_state_from_tensor(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"])


# --------------------------------------------------------------------------- signals
class StopFlag:
    """Turns SIGINT/SIGTERM into a polite request: finish the step, save, exit.

    A second Ctrl-C raises :class:`KeyboardInterrupt` at once (no save).
    """

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: Optional[str] = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except (ValueError, OSError):
                pass
        try:
            yield self
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old.clear()
