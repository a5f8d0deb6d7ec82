"""What ``--resume`` does with settings that differ from the recorded run.

Every :class:`~gsa.train.config.TrainConfig` field has one rule in :data:`RULES`:

* **honoured** - the new value applies from the resumed step on (``--epochs``: the learning-rate
  schedule's horizon becomes the new total; ``--lr``, ``--weight-decay``, ``--momentum``,
  ``--scheduler``, ``--warmup-epochs``: the optimizer and schedule use the new values at once);
* **refused** - the recorded state cannot carry over (the optimizer's moments, a position counted in
  batches of another size, weights of another network): :func:`check_settings` raises a one-line
  :class:`~gsa.errors.ConfigError` naming the setting, its recorded and requested values and why;
* **irrelevant** - where and how the run executes or reports (device, workers, progress display).

The learning rate after a resume is what a run started with the resumed settings has at the same
step: the schedule is a function of the optimizer step, rebuilt from the resumed config and
evaluated at the current step (:func:`apply_settings`). Extending a cosine run from E to N epochs
therefore stretches the cosine to the new horizon: the learning rate rises at the resume to the
stretched curve's value there, then decays to 0 at the end of epoch N; the warm-up (in epochs) is
unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import torch

from ..errors import ConfigError
from .config import TrainConfig
from .identity import NOT_DEFINING
from .loaders import eval_limit
from .optim import make_schedule
from .state import Position

__all__ = [
    "HONOURED",
    "REFUSED",
    "IRRELEVANT",
    "Rule",
    "RULES",
    "MODEL_ARGS_HONOURED",
    "check_settings",
    "apply_settings",
]

#: The three kinds of rule (see the module docstring).
HONOURED, REFUSED, IRRELEVANT = "honoured", "refused", "irrelevant"


@dataclass(frozen=True)
class Rule:
    """What a change of one setting does on resume: ``kind`` (:data:`HONOURED`, :data:`REFUSED`,
    :data:`IRRELEVANT`) and ``why`` (shown in the refusal, and in the documentation)."""

    kind: str
    why: str


def _refused(why: str) -> Rule:
    return Rule(REFUSED, why)


def _honoured(why: str) -> Rule:
    return Rule(HONOURED, why)


def _irrelevant(why: str) -> Rule:
    return Rule(IRRELEVANT, why)


_NETWORK = "the weights belong to the recorded network"
_BATCHES = "the position in the epoch and the learning-rate schedule are counted in the recorded run's batches"
_VALIDATION = (
    "honoured while the validation images stay the same; refused when they change, since the best "
    "epoch is chosen by comparing validation accuracies on the same images"
)
_NEXT_STEP = "applies from the resumed step on"

#: The rule for each TrainConfig field (a test checks that every field has one).
RULES: dict[str, Rule] = {
    "recipe": _refused("the run keeps its recipe"),
    "dataset": _refused("the weights, the classes and the order of the training images belong to the recorded dataset"),
    "data_dir": _irrelevant("only where the same dataset is found"),
    "download": _irrelevant("only whether a missing dataset is fetched"),
    "normalize": _refused("the weights were trained on inputs normalised as recorded"),
    "input_stats": _refused("the weights were trained on inputs normalised as recorded"),
    "preset": _refused(_NETWORK),
    "group": _refused(_NETWORK),
    "patch_size": _refused(_NETWORK),
    "dropout": _refused(_NETWORK + " (for GSA-Nets it adds or removes the dropout layers after pooling)"),
    "attention_dropout": _honoured("a probability of existing dropout layers; " + _NEXT_STEP),
    "norm": _refused(_NETWORK),
    "activation": _refused(_NETWORK),
    "model_args": _refused(_NETWORK + " (keys that change no weights, e.g. value_dropout or backend, are honoured)"),
    "epochs": _honoured(
        "the learning-rate schedule's horizon becomes the new total; fewer epochs than the run has started are refused"
    ),
    "batch_size": _refused(_BATCHES),
    "optimizer": _refused("the optimizer's state (moments, momentum buffers) cannot carry over to another optimizer"),
    "lr": _honoured("the schedule scales the new base learning rate from the resumed step on"),
    "momentum": _honoured(_NEXT_STEP),
    "weight_decay": _honoured(_NEXT_STEP),
    "scheduler": _honoured("the learning rate follows the new schedule from the current step (it may jump)"),
    "warmup_epochs": _honoured("the learning rate follows the new schedule from the current step (it may jump)"),
    "grad_clip": _honoured(_NEXT_STEP),
    "ema": _refused("the moving average of the weights is part of the recorded run (or absent from it)"),
    "precision": _honoured(_NEXT_STEP + "; switching to fp16 starts a fresh grad scaler"),
    "max_steps": _honoured("caps the run; the learning-rate schedule does not depend on it"),
    "train_subset": _refused(
        "the order of the training images, the position in the epoch and the learning-rate "
        "schedule are counted over the recorded training images"
    ),
    "seed": _refused("every epoch's image order and the restored random streams come from the recorded seed"),
    "deterministic": _honoured(_NEXT_STEP),
    "eval_batch_size": Rule(HONOURED, _VALIDATION),
    "eval_subset": Rule(HONOURED, _VALIDATION),
    "max_eval_batches": Rule(HONOURED, _VALIDATION),
    "rotation_step": _honoured("only the final report"),
    "rotation_subset": _honoured("only the final report"),
    "invariance_subset": _honoured("only the final report"),
    "device": _irrelevant("where the run executes (results agree up to round-off)"),
    "workers": _irrelevant("how batches are loaded (the same images in the same order)"),
    "loader": _irrelevant("how batches are loaded (the same images in the same order)"),
    "out": _irrelevant("the run directory is the one resumed"),
    "progress": _irrelevant("console output only"),
    "log_every": _irrelevant("console output only"),
    "tensorboard": _irrelevant("logging only"),
    "extra": _irrelevant("settings of a newer gsa, kept as they are"),
}
_VALIDATION_FIELDS = ("eval_batch_size", "eval_subset", "max_eval_batches")
#: ``--model-arg`` keys a resume honours (they change no weights); any other changed key is refused.
MODEL_ARGS_HONOURED = NOT_DEFINING - {"dropout_after_pool", "extra"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _refusal(name: str, recorded: Any, requested: Any, why: str) -> str:
    return f"{name} recorded {recorded!r}, requested {requested!r} ({why})"


def _model_args_refusals(recorded: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(recorded) | set(requested)):
        a, b = recorded.get(key), requested.get(key)
        if a != b and key not in MODEL_ARGS_HONOURED:
            out.append(_refusal(f"--model-arg {key}", a, b, RULES["model_args"].why.split(" (")[0]))
    return out


def _validation_limit(cfg: TrainConfig) -> Optional[int]:
    return eval_limit(cfg.eval_subset, cfg.max_eval_batches, cfg.effective_eval_batch_size())


def _refusals(
    old: TrainConfig, new: TrainConfig, changed: dict[str, tuple[Any, Any]], position: Optional[Position]
) -> list[str]:
    out = []
    for name, (a, b) in changed.items():
        rule = RULES[name]
        if name == "model_args":
            out += _model_args_refusals(a, b)
        elif rule.kind == REFUSED:
            out.append(_refusal(_flag(name), a, b, rule.why))
    validation = [n for n in _VALIDATION_FIELDS if n in changed]
    if validation and _validation_limit(old) != _validation_limit(new):
        names = ", ".join(_flag(n) for n in validation)
        out.append(
            f"{names} change the validation images from {_validation_limit(old) or 'all'} to "
            f"{_validation_limit(new) or 'all'} (the best epoch is chosen by comparing validation accuracies "
            "on the same images)"
        )
    if position is not None:
        started = position.epoch + (1 if position.batch > 0 else 0)
        if new.epochs < started:
            out.append(f"--epochs {new.epochs} is fewer than the {started} epoch(s) the run has already started")
    return out


def check_settings(
    recorded: Union[TrainConfig, Mapping[str, Any], None], requested: TrainConfig, position: Optional[Position] = None
) -> dict[str, tuple[Any, Any]]:
    """Compare the settings a run was recorded with and those it is resumed with (per :data:`RULES`).

    Raises :class:`ConfigError` (one line) naming every refused change with its recorded and requested
    values and the reason; ``position`` (where the run stands) adds the check that ``--epochs`` is not
    below the epochs already started. Returns the accepted changes ``{name: (recorded, requested)}``
    (``out`` left out). ``recorded=None`` (a state written before configs were recorded) accepts all.
    """
    if recorded is None:
        return {}
    old = recorded if isinstance(recorded, TrainConfig) else TrainConfig.from_dict(dict(recorded))
    # as config.json holds them (tuples read back as lists), whichever way each side was made
    a, b = json.loads(json.dumps(old.to_dict())), json.loads(json.dumps(requested.to_dict()))
    changed = {k: (a.get(k), b[k]) for k in b if a.get(k) != b[k] and k != "out"}
    refusals = _refusals(old, requested, changed, position)
    if refusals:
        raise ConfigError(
            "cannot resume with changed settings: "
            + "; ".join(refusals)
            + "; resume with the recorded values or start a new run"
        )
    return changed


def apply_settings(
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    steps_per_epoch: int,
) -> None:
    """Make the resumed config's optimisation settings take effect after the recorded optimizer and
    scheduler states were loaded (loading restores the recorded learning rate, weight decay, momentum
    and schedule).

    The schedule is rebuilt from ``cfg`` (:func:`~gsa.train.optim.make_schedule`: new horizon for a
    changed ``--epochs``) and the learning rate set to its value at the scheduler's current step,
    exactly what the scheduler itself computes there, so an unchanged config resumes bit for bit.
    """
    schedule = make_schedule(cfg, steps_per_epoch)
    groups = optimizer.param_groups
    for group in groups:
        group["weight_decay"] = cfg.weight_decay
        if "momentum" in group:  # SGD
            group["momentum"] = cfg.momentum
        group["initial_lr"] = cfg.lr
    scheduler.base_lrs = [cfg.lr] * len(groups)
    scheduler.lr_lambdas = [schedule] * len(groups)
    for group, base in zip(groups, scheduler.base_lrs):
        group["lr"] = base * schedule(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in groups]
