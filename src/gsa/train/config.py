"""Training recipes (data, one typed dataclass each) and the effective run configuration.

A :class:`Recipe` holds the hyper-parameters of one training setup (the paper's App. F
recipes plus the short ``mini`` demo). :func:`make_config` turns a recipe plus explicit
overrides into a validated :class:`TrainConfig`, which is saved with every run as
``config.json`` and is all that ``gsa eval`` and ``--resume`` need to rebuild the run.
:func:`config_from_file` reads such a file (JSON, or YAML with PyYAML installed) back as the
configuration of a new run (``gsa train --config FILE``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import re
import typing
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
INPUT_STATS = ("dataset", "original")

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
    ema: Optional[float] = None
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
                "CPU demo (~6 min on 2 cores, ~93 % test accuracy) on the embedded rotmnist-mini: a small p4 "
                "GSA-Net (rotmnist blocks, 24 channels, 2 heads, 8 in the lifting layer, 3x3, batch norm, sum "
                "read-out) on the digits averaged over 2x2 pixels (14x14), five epochs of all 7,000 training "
                "images, batch 16, Adam 5e-3 with warm-up and cosine decay"
            ),
            dataset="rotmnist-mini",
            preset="rotmnist",
            group="p4",
            patch_size=3,
            epochs=5,
            batch_size=16,
            optimizer="adam",
            lr=5e-3,
            weight_decay=1e-4,
            scheduler="cosine",
            warmup_epochs=0.1,  # 44 steps: 2 % of the five epochs
            attention_dropout=0.0,
            train_subset=7000,
            rotation_step=30.0,
            rotation_subset=100,
            model_args={
                "channels": 24,
                "num_heads": 2,
                "lifting_heads": 8,
                "readout": "sum",
                "input_pool": 2,
                "crop": 0,
                "norm": "batch",
            },
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
            description=(
                "paper App. F: SGD momentum 0.9, cosine (the code's 10-epoch linear warm-up), lr 0.01, "
                "batch 24, 350 epochs, wd 1e-4; the code's dropout: input 0.2, 0.3 after pooling"
            ),
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
            warmup_epochs=10.0,  # the original code's cosine schedule warms up linearly for 10 epochs
            # The code's rates (gsa.models.CIFAR10_DROPOUT["code"]; the paper's text: 0.3 / 0.2): the
            # released code hard-codes them, so its CIFAR-10 results were trained with them.
            dropout=0.3,  # after each max-pool
            model_args={"input_dropout": 0.2},
        ),
        Recipe(
            name="pcam",
            description=(
                "paper App. F: SGD momentum 0.9, cosine (the code's 10-epoch linear warm-up), lr 0.01, batch 8, "
                "100 epochs, wd 1e-4"
            ),
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
            warmup_epochs=10.0,  # the original code's cosine schedule warms up linearly for 10 epochs
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
    input_stats: str = "dataset"  # normalise with the dataset's statistics, or the original code's ("original")
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
    ema: Optional[float] = None  # decay of the weights' moving average (gsa.train.ema); None: no average
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
        for name in ("out", "data_dir"):  # a pathlib.Path is fine: stored as a string (config.json is JSON)
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))

        def choice(name: str, value: Any, options: tuple) -> None:
            if value not in options:
                raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(options)}")

        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("scheduler", self.scheduler, SCHEDULERS)
        choice("precision", self.precision, PRECISIONS)
        choice("progress mode", self.progress, PROGRESS_MODES)
        choice("loader", self.loader, LOADERS)
        choice("input statistics", self.input_stats, INPUT_STATS)
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
            isinstance(self.patch_size, bool)
            or not isinstance(self.patch_size, int)
            or self.patch_size < 1
            or self.patch_size % 2 == 0
        ):
            raise ConfigError(f"--patch-size must be odd (or 'global'), got {self.patch_size!r}")
        _in_range("lr", self.lr, low=0.0, low_open=True)
        _in_range(
            "warmup-epochs",
            self.warmup_epochs,
            low=0.0,
            high=float(self.epochs),
            what=f"in [0, --epochs={self.epochs}]",
        )
        _in_range("weight-decay", self.weight_decay, low=0.0)
        _in_range("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _in_range("grad-clip", self.grad_clip, low=0.0, low_open=True, optional=True)
        _in_range("ema", self.ema, low=0.0, high=1.0, low_open=True, high_open=True, optional=True)
        for name in ("dropout", "attention_dropout"):
            _in_range(name.replace("_", "-"), getattr(self, name), low=0.0, high=1.0, high_open=True, optional=True)
        _in_range("rotation-step", self.rotation_step, low=0.0, high=360.0, what="in [0, 360] degrees")
        _check_types({f.name: getattr(self, f.name) for f in fields(self)})  # after the checks above: their words
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        if self.rotation_subset < 1 or self.invariance_subset < 0:
            raise ConfigError("--rotation-subset must be >= 1 and --invariance-subset >= 0")
        return self

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (what ``config.json`` holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Rebuild from a dict; unknown keys (from a newer version) are kept in ``extra``.

        A value of the wrong JSON type (``"lr": "abc"``, ``"epochs": [1]``) raises :class:`ConfigError`
        naming the field; ranges are checked by :meth:`validate`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        kwargs = {k: v for k, v in data.items() if k in known}
        _check_types(kwargs)
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
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def _is_a(value: Any, kind: Any) -> bool:
    """Whether a JSON value fits the annotation ``kind`` (bool is not an int; an int is a float)."""
    if kind is Any:
        return True
    if typing.get_origin(kind) is typing.Union:
        return any(_is_a(value, arm) for arm in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(kind) or kind)


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}


def _kind_name(kind: Any) -> str:
    if typing.get_origin(kind) is typing.Union:
        return " or ".join("null" if a is type(None) else _kind_name(a) for a in typing.get_args(kind))
    return _KIND_NAMES.get(typing.get_origin(kind) or kind, str(kind))


def _check_types(values: dict[str, Any], where: str = "") -> None:
    """A :class:`ConfigError` (prefixed by ``where``) for the first field of :class:`TrainConfig` whose
    value has the wrong type (integers pass for float fields; booleans only for bool fields)."""
    hints = typing.get_type_hints(TrainConfig)
    for name, value in values.items():
        if not _is_a(value, hints[name]):
            raise ConfigError(f"{where}config field {name!r} must be {_kind_name(hints[name])}, got {value!r}")


def _in_range(
    flag: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    what: str | None = None,
) -> None:
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


def _check_known(names: list[str], what: str) -> None:
    """Raise :class:`ConfigError` naming each of ``names`` that is no TrainConfig field (and the
    closest field name, when one is close)."""
    known = [f.name for f in fields(TrainConfig)]
    bad = [n for n in names if n not in known]
    if not bad:
        return
    hints = []
    for name in bad:
        close = difflib.get_close_matches(str(name).replace("-", "_"), known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigError(f"{what}{'s' if len(bad) > 1 else ''} {', '.join(hints)}")


def _recipe_values(rec: Recipe) -> dict[str, Any]:
    """The TrainConfig fields that ``rec`` sets (a fresh ``model_args`` dict)."""
    values: dict[str, Any] = {f.name: getattr(rec, f.name) for f in fields(Recipe) if f.name not in _RECIPE_ONLY}
    values["recipe"] = rec.name
    values["model_args"] = dict(rec.model_args)
    return values


def _override(
    values: dict[str, Any], overrides: dict[str, Any], none_is_a_value: bool, given: frozenset[str] = frozenset()
) -> TrainConfig:
    """``values`` updated by ``overrides`` (their ``model_args`` entries added to / replacing
    those of ``values``), as a validated TrainConfig.

    A warm-up that came from the recipe (not in ``overrides`` nor in ``given``, the fields a config
    file set) and is longer than the run, e.g. the ``cifar10`` recipe's 10 epochs with ``--epochs 3``,
    is cut to the run's length; a warm-up given explicitly must fit (:meth:`TrainConfig.validate`)."""
    values = {**values, "model_args": dict(values["model_args"])}
    extra_model_args = overrides.get("model_args") or {}
    if not isinstance(extra_model_args, dict):
        raise ConfigError(f"config field 'model_args' must be a mapping, got {extra_model_args!r}")
    keep = {k: v for k, v in overrides.items() if v is not None or none_is_a_value or k in _NONE_IS_A_VALUE}
    values.update({k: v for k, v in keep.items() if k != "model_args"})
    values["model_args"].update(extra_model_args)
    if "warmup_epochs" not in keep and "warmup_epochs" not in given:
        values["warmup_epochs"] = _fit_warmup(values["warmup_epochs"], values["epochs"])
    return TrainConfig(**values).validate()


def _fit_warmup(warmup: Any, epochs: Any) -> Any:
    """``warmup`` cut to ``epochs`` when both are numbers and it is longer (else unchanged: validate judges)."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (warmup, epochs))
    return float(epochs) if numbers and warmup > epochs else warmup


def make_config(recipe: str | Recipe = DEFAULT_RECIPE, **overrides: Any) -> TrainConfig:
    """Effective config = recipe's values, then ``overrides`` (``None`` values are ignored, except
    ``patch_size=None``: global attention).

    Unknown override names raise :class:`ConfigError`.
    """
    rec = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    _check_known(list(overrides), "unknown config field")
    return _override(_recipe_values(rec), overrides, none_is_a_value=False)


def config_from_file(path: str | os.PathLike, recipe: str | Recipe | None = None, **overrides: Any) -> TrainConfig:
    """The configuration in ``path`` (what ``gsa train --print-config`` prints and a run's
    ``config.json`` holds; a run directory means its ``config.json``), then ``overrides``.

    The file is JSON, or YAML when its name ends in ``.yaml``/``.yml`` (needs PyYAML). Fields it
    leaves out come from the recipe its ``"recipe"`` field names (``recipe`` replaces that name;
    default ``mini``), then from :class:`TrainConfig`'s defaults; its ``model_args`` replace the
    recipe's. ``overrides`` replace the file's values, ``None`` included (no clipping, no step cap,
    global attention), except ``model_args``, whose entries are added to / replace the file's.
    Raises :class:`ConfigError` (one line, naming the file) when it is missing or unreadable, not a
    mapping, or holds an unknown key (the closest known one is suggested), a value of the wrong type
    or an out-of-range one (the file must be valid by itself, with the flags' words: ``--lr must be
    > 0``); then the same errors as :func:`make_config` for ``overrides``.
    """
    path = _config_path(path)
    data = read_config_file(path)
    rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    _check_known(list(overrides), "unknown config field")
    try:  # the file by itself (filled by its recipe) must be valid: its errors name it
        rec = rec or get_recipe(data.get("recipe", DEFAULT_RECIPE))
        values = {**_recipe_values(rec), **data, "recipe": rec.name}
        _override(values, {}, none_is_a_value=True, given=frozenset(data))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return _override(values, overrides, none_is_a_value=True, given=frozenset(data))


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The fields in a JSON or YAML configuration file, checked for unknown keys and wrong types.

    A run directory means its ``config.json``; ``.yaml``/``.yml`` files are YAML (PyYAML needed),
    other files JSON. Raises :class:`ConfigError` (one line, starting with the path) otherwise.
    """
    path = _config_path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    yaml = path.suffix.lower() in (".yaml", ".yml")
    data = _parse_yaml(text, path) if yaml else _parse_json(text, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of configuration fields, got {type(data).__name__}")
    _check_known(list(data), f"{path}: unknown key")
    _check_types(data, where=f"{path}: ")
    return data


def _config_path(path: str | os.PathLike) -> Path:
    """``path``, or ``path/config.json`` when ``path`` is a directory (a run directory)."""
    path = Path(path)
    return path / CONFIG_FILE if path.is_dir() else path


def _parse_json(text: str, path: Path) -> Any:
    """``json.loads`` with its error as a one-line :class:`ConfigError` naming ``path``."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def _parse_yaml(text: str, path: Path) -> Any:
    """Safe-load YAML (``1e-5`` is a float, as in YAML 1.2 and JSON); errors name ``path``."""
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or give a JSON file") from None
    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML ({exc.problem}{where})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


@functools.lru_cache(maxsize=1)
def _yaml_loader() -> type:
    """PyYAML's SafeLoader, also resolving exponent-only floats (``1e-05``: a string in YAML 1.1)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789."))
    return Loader


def config_diff(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ between two configs: ``{name: (old, new)}``."""
    a, b = old.to_dict(), new.to_dict()
    return {k: (a[k], b[k]) for k in a if a[k] != b.get(k)}
