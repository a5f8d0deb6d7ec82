"""Where the engine gets its models, datasets and image rotation from.

By default these come from :mod:`gsa.models` and :mod:`gsa.data`. Tests (and users who
want to train their own model with this engine) can swap them with :func:`use_hooks`
or by passing a :class:`Hooks` to :func:`gsa.train.train` / :func:`gsa.train.evaluate_run`.

The command line takes hooks by name (``--hooks NAME`` or ``GSA_HOOKS=NAME``, see
:func:`load_hooks`): an entry point of the ``gsa.hooks`` group that an installed package
registers, or a module of gsa itself (``gsa.train.testing:toy_hooks``). Nothing else is
imported, and never a module from the current directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig


@dataclass(frozen=True)
class DataSpec:
    """What the engine needs to know about a dataset.

    ``mean``/``std``: the per-channel statistics inputs are normalised with by default;
    ``original_stats``: ``(mean, std)`` of the original GSA-Nets code, for ``--input-stats original``
    (``None``: it had none for this dataset)."""

    name: str
    in_channels: int
    num_classes: int
    image_size: tuple[int, int]
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    original_stats: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None

    def __post_init__(self) -> None:
        for field, low in (("in_channels", 1), ("num_classes", 2)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"dataset {self.name!r}: {field} must be an integer >= {low}, got {value!r}"
                    + (" (a classifier needs at least 2 classes)" if field == "num_classes" else "")
                )


ModelFn = Callable[[TrainConfig, DataSpec], nn.Module]
DatasetFn = Callable[[TrainConfig, str], Any]
InfoFn = Callable[[str], DataSpec]
RotateFn = Callable[[torch.Tensor, float], torch.Tensor]  # (images, degrees) -> rotated images


def _data_error_types() -> tuple[type[BaseException], ...]:
    try:
        from gsa.data import DataError  # type: ignore[attr-defined]
    except Exception:
        return (ValueError, KeyError, OSError)
    return (DataError, ValueError, KeyError, OSError)


def default_info(name: str) -> DataSpec:
    """Dataset metadata from :func:`gsa.data.info`."""
    import gsa.data as gdata

    try:
        info = gdata.info(name)
    except _data_error_types() as exc:
        raise ConfigError(_one_line(exc)) from None
    size = getattr(info, "image_size", None)
    if isinstance(size, int):
        size = (size, size)
    mean = getattr(info, "mean", None)
    std = getattr(info, "std", None)
    original = getattr(info, "original_stats", None)
    return DataSpec(
        name=name,
        in_channels=int(info.in_channels),
        num_classes=int(info.num_classes),
        image_size=tuple(int(s) for s in size) if size is not None else (0, 0),
        mean=tuple(float(m) for m in mean) if mean is not None else None,
        std=tuple(float(s) for s in std) if std is not None else None,
        original_stats=tuple(tuple(float(v) for v in part) for part in original) if original is not None else None,
    )


def input_stats(cfg: TrainConfig, spec: DataSpec) -> tuple[Optional[tuple[float, ...]], Optional[tuple[float, ...]]]:
    """The per-channel ``(mean, std)`` a run normalises its inputs with (``(None, None)``: none).

    ``--no-normalize``: none; ``--input-stats dataset`` (default): the dataset's ``spec.mean``/``std``;
    ``--input-stats original``: the original code's fixed values (``spec.original_stats``), a
    :class:`ConfigError` for a dataset it had none for.
    """
    if not cfg.normalize:
        return None, None
    if cfg.input_stats != "original":
        return spec.mean, spec.std
    if spec.original_stats is None:
        raise ConfigError(
            f"--input-stats original: the original code had no statistics for dataset {spec.name!r} "
            "(only rotmnist, rotmnist-mini, cifar10 and pcam); use --input-stats dataset"
        )
    return spec.original_stats


def default_dataset(cfg: TrainConfig, split: str) -> Any:
    """The ``split`` of ``cfg.dataset`` from :func:`gsa.data.get_dataset`."""
    import gsa.data as gdata

    try:
        return gdata.get_dataset(cfg.dataset, split, data_dir=cfg.data_dir, download=cfg.download)
    except _data_error_types() as exc:
        raise ConfigError(_one_line(exc)) from None


def _model_config_fields() -> Optional[set[str]]:
    """Field names of ``gsa.models.GSANetConfig`` (None if it cannot be introspected)."""
    try:
        from gsa.models import GSANetConfig  # type: ignore[attr-defined]
    except Exception:
        return None
    if not dataclasses.is_dataclass(GSANetConfig):
        return None
    return {f.name for f in dataclasses.fields(GSANetConfig)}


def model_overrides(cfg: TrainConfig, spec: DataSpec, known: Optional[set[str]] = None) -> dict[str, Any]:
    """Keyword overrides passed to :func:`gsa.models.create` for this config and dataset.

    ``--attention-dropout`` sets the dropout on attention weights and, when the model has
    one, on the values too (the paper's "attention dropout"); ``--dropout`` sets the model's
    ``dropout`` field, or its dropout after pooling when it has no such field.
    ``--model-arg KEY=VALUE`` entries are passed through unchanged.
    """
    kw: dict[str, Any] = {"num_classes": spec.num_classes, "in_channels": spec.in_channels}
    if cfg.attention_dropout is not None:
        kw["attention_dropout"] = cfg.attention_dropout
        if known is not None and "value_dropout" in known:
            kw["value_dropout"] = cfg.attention_dropout
    if cfg.dropout is not None:
        if known is not None and "dropout" not in known and "dropout_after_pool" in known:
            kw["dropout_after_pool"] = cfg.dropout
        else:
            kw["dropout"] = cfg.dropout
    for name in ("norm", "activation"):
        value = getattr(cfg, name)
        if value is not None:
            kw[name] = value
    kw.update(cfg.model_args)
    return kw


def default_model(cfg: TrainConfig, spec: DataSpec) -> nn.Module:
    """:func:`gsa.models.create` for ``cfg.preset`` (patch size 0 = global attention)."""
    import gsa.models as gmodels

    try:
        model = gmodels.create(
            cfg.preset, group=cfg.group, patch_size=cfg.patch_size, **model_overrides(cfg, spec, _model_config_fields())
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot build model {cfg.preset!r} (group {cfg.group}): {_one_line(exc)}") from None
    check_image_size(model, spec.image_size, f"dataset {spec.name!r} has")
    return model


def check_image_size(model: nn.Module, size: tuple[int, int], source: str) -> None:
    """A :class:`ConfigError` when images of ``size`` ``(H, W)`` are smaller than the model takes (its
    ``min_input_size()``, when it has one; a size of 0 means unknown). ``source`` starts the second
    half of the message, e.g. ``"dataset 'npz:x.npz' has"``."""
    least = getattr(model, "min_input_size", None)
    if not callable(least) or not all(size):
        return
    m = least()
    if min(size) < m:
        raise ConfigError(
            f"the model needs images of at least {m}x{m} pixels (its crops and 2x2 max-pools); "
            f"{source} {size[0]}x{size[1]} images"
        )


def default_rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """:func:`gsa.groups.rotate_image`: counter-clockwise by ``degrees`` (bilinear, zero fill)."""
    from gsa.groups import rotate_image

    return rotate_image(images, float(degrees))


@dataclass(frozen=True)
class Hooks:
    """Factories the engine uses; replace any of them with :func:`dataclasses.replace`."""

    model_fn: ModelFn = default_model
    dataset_fn: DatasetFn = default_dataset
    info_fn: InfoFn = default_info
    rotate_fn: RotateFn = default_rotate

    def replace(self, **changes: Any) -> "Hooks":
        """A copy with the given factories replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


_current: list[Hooks] = [Hooks()]


def get_hooks() -> Hooks:
    """The hooks in effect (the defaults unless :func:`use_hooks` is active)."""
    return _current[-1]


@contextlib.contextmanager
def use_hooks(hooks: Optional[Hooks] = None, **changes: Any) -> Iterator[Hooks]:
    """Temporarily use ``hooks`` (or the current ones with ``changes``)."""
    h = (hooks or get_hooks()).replace(**changes) if changes else (hooks or get_hooks())
    _current.append(h)
    depth = len(_current)
    try:
        yield h
    finally:
        del _current[depth - 1]


def set_hooks(hooks: Hooks) -> None:
    """Replace the hooks in effect for the rest of the process."""
    _current[-1] = hooks


#: the entry-point group of named hooks (``[project.entry-points."gsa.hooks"]`` in a pyproject.toml)
ENTRY_POINT_GROUP = "gsa.hooks"
_GSA_MODULE = re.compile(r"gsa(\.[A-Za-z_][A-Za-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?")


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_hooks(name: str, *, source: str = "hooks") -> Hooks:
    """The :class:`Hooks` named ``name``: an installed entry point of the ``gsa.hooks`` group
    (registered by a package: ``[project.entry-points."gsa.hooks"] NAME = "module:function"``),
    or ``gsa.MODULE:ATTR`` inside the gsa package (e.g. ``gsa.train.testing:toy_hooks``). The
    object found is used as is if it is a :class:`Hooks`, else called without arguments.

    Raises:
        ConfigError: any other name (nothing is imported for it), or the hooks cannot be loaded;
            ``source`` (e.g. ``"--hooks"``) names where the name came from.
    """
    name = name.strip()
    points = _entry_points()
    try:
        if name in points:
            obj = points[name].load()
        elif _GSA_MODULE.fullmatch(name):
            module_name, _, attr = name.partition(":")
            obj = getattr(importlib.import_module(module_name), attr or "hooks")
        else:
            installed = ", ".join(sorted(points)) or "none"
            raise ConfigError(
                f"{source} {name!r}: no such hooks; hooks come only from an installed entry point of the "
                f"{ENTRY_POINT_GROUP!r} group (register one in your package's pyproject.toml: "
                f'[project.entry-points."{ENTRY_POINT_GROUP}"] NAME = "module:function", install it, '
                f"then use NAME) or from a gsa module (gsa.MODULE:ATTR); installed: {installed}"
            )
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{source} {name!r}: cannot load the hooks ({_one_line(exc)})") from None
    hooks = obj() if callable(obj) and not isinstance(obj, Hooks) else obj
    if not isinstance(hooks, Hooks):
        raise ConfigError(f"{source} {name!r} did not give a gsa.train.Hooks (got {type(hooks).__name__})")
    return hooks


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text.strip("'\"")
    return " ".join(text.split())
