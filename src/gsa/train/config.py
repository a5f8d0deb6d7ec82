"""Training recipes (data, one typed dataclass each) and the effective run configuration.

A :class:`Recipe` holds the hyper-parameters of one training setup (the paper's App. F
recipes plus the short ``mini`` demo). :func:`make_config` turns a recipe plus explicit
overrides into a validated :class:`TrainConfig`, which is saved with every run as
``config.json`` and is all that ``gsa eval`` and ``--resume`` need to rebuild the run.
"""

from __future__ import annotations

import dataclasses
import math
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from .. import groups as _groups
from ..errors import ConfigError
from ..nn.blocks import ACTIVATIONS, NORMS
from ..registry import Registry

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("constant", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")
PROGRESS_MODES = ("auto", "bar", "plain", "none")
LOADERS = ("auto", "tensor", "dataloader")

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Recipe:
    """One training recipe. Every field can be overridden from the command line."""

    name: str
    description: str
    dataset: str
    preset: str
    group: str = "p4"
    patch_size: int = 5
    epochs: int = 1
    batch_size: int = 8
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "constant"
    warmup_epochs: float = 0.0
    attention_dropout: Optional[float] = None
    dropout: Optional[float] = None
    train_subset: Optional[int] = None
    eval_subset: Optional[int] = None
    rotation_step: float = 15.0
    rotation_subset: int = 500
    #: extra ``gsa.models.create`` overrides (``--model-arg KEY=VALUE`` adds to / replaces entries)
    model_args: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="mini",
            description=(
                "CPU demo (~10 min on 2 cores) on the embedded rotmnist-mini: a small p4 GSA-Net "
                "(rotmnist blocks, 24 channels, 2 heads, 8 in the lifting layer, 3x3, sum read-out), one epoch of all "
                "7,000 training images, batch 8, Adam 5e-3 with warm-up and cosine decay"
            ),
            dataset="rotmnist-mini",
            preset="rotmnist",
            group="p4",
            patch_size=3,
            epochs=1,
            batch_size=8,
            optimizer="adam",
            lr=5e-3,
            weight_decay=1e-4,
            scheduler="cosine",
            warmup_epochs=0.05,
            attention_dropout=0.0,
            train_subset=7000,
            rotation_step=30.0,
            rotation_subset=100,
            model_args={"channels": 24, "num_heads": 2, "lifting_heads": 8, "readout": "sum"},
        ),
        Recipe(
            name="rotmnist",
            description="paper App. F: Adam lr 1e-3, wd 1e-4, batch 8, 300 epochs, attention dropout 0.1",
            dataset="rotmnist",
            preset="rotmnist",
            group="p4",
            patch_size=5,
            epochs=300,
            batch_size=8,
            optimizer="adam",
            lr=1e-3,
            weight_decay=1e-4,
            scheduler="constant",
            attention_dropout=0.1,
        ),
        Recipe(
            name="cifar10",
            description="paper App. F: SGD momentum 0.9, cosine, lr 0.01, batch 24, 350 epochs, wd 1e-4",
            dataset="cifar10",
            preset="cifar10",
            group="mz2",
            patch_size=5,
            epochs=350,
            batch_size=24,
            optimizer="sgd",
            lr=0.01,
            momentum=0.9,
            weight_decay=1e-4,
            scheduler="cosine",
        ),
        Recipe(
            name="pcam",
            description="paper App. F: SGD, cosine, lr 0.01, batch 8, 100 epochs (momentum 0.9, wd 1e-4 assumed)",
            dataset="pcam",
            preset="pcam",
            group="p4",
            patch_size=5,
            epochs=100,
            batch_size=8,
            optimizer="sgd",
            lr=0.01,
            momentum=0.9,
            weight_decay=1e-4,
            scheduler="cosine",
        ),
    )
}

DEFAULT_RECIPE = "mini"
# lookups by name (the RECIPES dict itself); "choose one of" like the other ConfigErrors
_RECIPES: Registry[Recipe] = Registry("recipe", RECIPES, error=ConfigError, prompt="choose one of")


def get_recipe(name: str) -> Recipe:
    """Return the recipe called ``name`` or raise :class:`ConfigError` listing the choices.

    Any spelling :mod:`gsa.registry` allows works (``"MINI"``, ``"rot-mnist"``).
    """
    return _RECIPES.get(name)


def list_recipes() -> list[str]:
    """Names of the available recipes."""
    return _RECIPES.names()


@dataclass
class TrainConfig:
    """The effective configuration of one training run (saved as ``config.json``)."""

    recipe: str = DEFAULT_RECIPE
    # data
    dataset: str = "rotmnist-mini"
    data_dir: Optional[str] = None
    download: bool = False
    normalize: bool = True
    # model
    preset: str = "rotmnist"
    group: str = "p4"
    patch_size: Optional[int] = 5  # None = global attention
    dropout: Optional[float] = None  # None: the preset's default
    attention_dropout: Optional[float] = None
    norm: Optional[str] = None
    activation: Optional[str] = None
    model_args: dict[str, Any] = field(default_factory=dict)  # extra gsa.models.create(...) overrides
    # optimisation
    epochs: int = 2
    batch_size: int = 16  # global batch (all processes together)
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "constant"
    warmup_epochs: float = 0.0  # linear LR warm-up before the schedule
    grad_clip: Optional[float] = None
    precision: str = "fp32"
    max_steps: Optional[int] = None
    train_subset: Optional[int] = None  # None: the whole train split; N: its first N images
    seed: int = 0
    deterministic: bool = False
    # evaluation
    eval_batch_size: Optional[int] = None  # None: max(batch_size, 100)
    eval_subset: Optional[int] = None  # None: the whole valid/test split
    max_eval_batches: Optional[int] = None  # None: no cap
    rotation_step: float = 15.0  # degrees; 0 disables the rotation curve
    rotation_subset: int = 500  # test images used for the rotation curve
    invariance_subset: int = 32  # test images used for the invariance check (the group's exact elements)
    # runtime
    device: str = "auto"
    workers: int = 0
    loader: str = "auto"  # auto | tensor | dataloader
    out: Optional[str] = None
    progress: str = "auto"
    log_every: int = 0  # 0: about ten lines per epoch
    tensorboard: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ helpers
    @property
    def global_attention(self) -> bool:
        """True when ``patch_size`` is None (global attention)."""
        return self.patch_size is None

    def effective_eval_batch_size(self) -> int:
        """``eval_batch_size``, or ``max(batch_size, 100)`` when it is None."""
        return self.eval_batch_size or max(self.batch_size, 100)

    def validate(self) -> "TrainConfig":
        """Check every field; raise :class:`ConfigError` with a clear message."""

        def choice(name: str, value: Any, options: tuple) -> None:
            if value not in options:
                raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(options)}")

        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("scheduler", self.scheduler, SCHEDULERS)
        choice("precision", self.precision, PRECISIONS)
        choice("progress mode", self.progress, PROGRESS_MODES)
        choice("loader", self.loader, LOADERS)
        try:  # checked here, not only when a model is built: the final report's invariance check uses it
            _groups.get(self.group)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        if self.norm is not None:
            choice("norm", self.norm, NORMS)
        if self.activation is not None:
            choice("activation", self.activation, ACTIVATIONS)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        optional_positive = {
            "max_steps": self.max_steps,
            "train_subset": self.train_subset,
            "eval_subset": self.eval_subset,
            "max_eval_batches": self.max_eval_batches,
            "eval_batch_size": self.eval_batch_size,
        }
        for name, value in optional_positive.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.patch_size == 0 and not isinstance(self.patch_size, bool):
            self.patch_size = None  # config files written before gsa 0.2 spelt global attention 0
        if self.patch_size is not None and (
            isinstance(self.patch_size, bool) or not isinstance(self.patch_size, int) or self.patch_size < 1
            or self.patch_size % 2 == 0
        ):
            raise ConfigError(f"--patch-size must be odd (or 'global'), got {self.patch_size!r}")
        _in_range("lr", self.lr, low=0.0, low_open=True)
        _in_range("warmup-epochs", self.warmup_epochs, low=0.0, high=float(self.epochs), what=f"in [0, --epochs={self.epochs}]")
        _in_range("weight-decay", self.weight_decay, low=0.0)
        _in_range("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _in_range("grad-clip", self.grad_clip, low=0.0, low_open=True, optional=True)
        for name in ("dropout", "attention_dropout"):
            _in_range(name.replace("_", "-"), getattr(self, name), low=0.0, high=1.0, high_open=True, optional=True)
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        _in_range("rotation-step", self.rotation_step, low=0.0, high=360.0, what="in [0, 360] degrees")
        if self.rotation_subset < 1 or self.invariance_subset < 0:
            raise ConfigError("--rotation-subset must be >= 1 and --invariance-subset >= 0")
        return self

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (what ``config.json`` holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Rebuild from a dict; unknown keys (from a newer version) are kept in ``extra``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        kwargs = {k: v for k, v in data.items() if k in known}
        cfg = cls(**kwargs)
        if unknown:  # written by a newer version: keep, do not fail
            cfg.extra = {**cfg.extra, **{k: data[k] for k in unknown}}
        return cfg

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``<run_dir>/config.json`` atomically; returns its path."""
        from .checkpoint import atomic_write_bytes

        path = Path(run_dir) / CONFIG_FILE
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        atomic_write_bytes(path, text.encode())
        return path

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "TrainConfig":
        """Read ``<run_dir>/config.json``; raises :class:`ConfigError` if missing or unreadable."""
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"{path}: no such file (not a gsa run directory?)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read run configuration ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_dict(data)


def _in_range(flag: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False,
              high_open: bool = False, optional: bool = False, what: str | None = None) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite real number in the interval (None if ``optional``)."""
    if value is None and optional:
        return
    if what is None and high is None:
        what = f"{'>' if low_open else '>='} {low:g}"
    elif what is None:
        what = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(f"--{flag} must be {what} (a finite number), got {value!r}")


_RECIPE_ONLY = {"name", "description"}
_NONE_IS_A_VALUE = {"patch_size"}  # None = global attention, not "keep the recipe's value"


def make_config(recipe: str | Recipe = DEFAULT_RECIPE, **overrides: Any) -> TrainConfig:
    """Effective config = recipe's values, then ``overrides`` (``None`` values are ignored, except
    ``patch_size=None``: global attention).

    Unknown override names raise :class:`ConfigError`.
    """
    rec = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    known = {f.name for f in fields(TrainConfig)}
    bad = sorted(k for k in overrides if k not in known)
    if bad:
        raise ConfigError(f"unknown config field(s): {', '.join(bad)}")
    values: dict[str, Any] = {"recipe": rec.name}
    for f in fields(Recipe):
        if f.name not in _RECIPE_ONLY:
            values[f.name] = getattr(rec, f.name)
    values["model_args"] = dict(rec.model_args)
    extra_model_args = overrides.pop("model_args", None) or {}
    values.update({k: v for k, v in overrides.items() if v is not None or k in _NONE_IS_A_VALUE})
    values["model_args"].update(extra_model_args)
    return TrainConfig(**values).validate()


def config_diff(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ between two configs: ``{name: (old, new)}``."""
    a, b = old.to_dict(), new.to_dict()
    return {k: (a[k], b[k]) for k in a if a[k] != b.get(k)}
