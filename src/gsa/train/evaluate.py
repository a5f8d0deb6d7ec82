"""``gsa eval``: evaluate a finished (or running) training run's checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from . import checkpoint as ckpt
from . import reporting as R
from .config import CONFIG_FILE, TrainConfig
from .device import resolve_device
from .hooks import Hooks, get_hooks, input_stats
from .loaders import EvalBatches, eval_limit, materialize, take
from .precision import Precision
from .rng import seed_everything
from .steps import evaluate, make_prepare


def locate_run(path: str | Path, which: str = "best") -> tuple[TrainConfig, Path]:
    """(run config, weight file) for a run directory or a ``.safetensors`` file inside one."""
    p = Path(path)
    if p.is_dir():
        run_dir = p
        if not (run_dir / CONFIG_FILE).is_file():
            raise ConfigError(f"{run_dir}: not a gsa run directory ({CONFIG_FILE} missing)")
        weights = ckpt.resolve_weights(run_dir, which)
    elif p.exists():
        run_dir, weights = p.parent, p
        if not (run_dir / CONFIG_FILE).is_file():
            raise ConfigError(f"{p}: no {CONFIG_FILE} next to the checkpoint; cannot rebuild the model")
    else:
        raise ConfigError(f"{p}: no such run directory or checkpoint")
    return TrainConfig.load(run_dir), weights


def _run_model(cfg: TrainConfig, weights: Path, hooks: Hooks):
    """``(model, data spec)``: the model of ``cfg`` built by ``hooks`` with ``weights`` loaded, in eval mode."""
    spec = hooks.info_fn(cfg.dataset)
    model = hooks.model_fn(cfg, spec)
    ckpt.load_weights(weights, model, cfg)  # raises CheckpointError naming the file (or the differing fields)
    return model.eval(), spec


def load_run_model(path: str | Path, which: str = "best", hooks: Optional[Hooks] = None):
    """``(model, config, data spec)`` of a run directory or a ``.safetensors`` file inside one: the model
    (CPU, eval mode) with the run's weights; the spec gives its input size and normalisation.

    Unlike :func:`gsa.models.load`, which rebuilds a GSA-Net from the weight file alone, this builds
    the model with the run's hooks, so it also serves models of user hooks and weight files written
    before the model record existed."""
    cfg, weights = locate_run(path, which)
    model, spec = _run_model(cfg, weights, hooks or get_hooks())
    return model, cfg, spec


def evaluate_run(
    path: str | Path,
    *,
    split: str = "test",
    which: str = "best",
    eval_subset: Optional[int] = None,
    max_eval_batches: Optional[int] = None,
    full: bool = False,
    batch_size: Optional[int] = None,
    device: Optional[str] = None,
    precision: Optional[str] = None,
    rotations: bool = False,
    rotation_step: Optional[float] = None,
    rotation_subset: Optional[int] = None,
    data_dir: Optional[str] = None,
    hooks: Optional[Hooks] = None,
) -> dict[str, Any]:
    """Accuracy/loss of a run's checkpoint on ``split``.

    By default the run's own evaluation settings are used (``--eval-subset``,
    ``--max-eval-batches``, eval batch size, precision, device), so the test accuracy
    equals the one in ``report.json`` exactly. ``full=True`` evaluates the whole split.
    """
    hooks = hooks or get_hooks()
    cfg, weights = locate_run(path, which)
    changes: dict[str, Any] = {"download": False}
    if data_dir is not None:
        changes["data_dir"] = data_dir
    if device is not None:
        changes["device"] = device
    if precision is not None:
        changes["precision"] = precision
    if batch_size is not None:
        changes["eval_batch_size"] = batch_size
    cfg = dataclasses.replace(cfg, **changes).validate()
    if split not in ("train", "valid", "test"):
        raise ConfigError(f"unknown split {split!r}; choose one of: train, valid, test")

    dev = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model, spec = _run_model(cfg, weights, hooks)
    model = model.to(dev)
    ds = hooks.dataset_fn(cfg, split)
    tensors = None if cfg.loader == "dataloader" else materialize(ds, force=(cfg.loader == "tensor"))
    bs = cfg.effective_eval_batch_size()
    if full:
        limit = None
    else:
        limit = eval_limit(
            eval_subset if eval_subset is not None else cfg.eval_subset,
            max_eval_batches if max_eval_batches is not None else cfg.max_eval_batches,
            bs,
        )
    prec = Precision(cfg.precision, dev)
    prepare = make_prepare(*input_stats(cfg, spec), dev)
    meter, _ = evaluate(
        model, EvalBatches(ds, tensors, bs, limit, workers=cfg.workers), prepare=prepare, precision=prec, device=dev
    )
    result: dict[str, Any] = {
        "checkpoint": str(weights),
        "split": split,
        "accuracy": meter.accuracy,
        "loss": meter.loss,
        "images": int(meter.count),
        "limit": limit,
        "device": str(dev),
        "precision": cfg.precision,
    }
    if rotations:
        step = cfg.rotation_step if rotation_step is None else rotation_step
        angles = R.rotation_angles(step or 15.0)
        n = rotation_subset or cfg.rotation_subset
        imgs, labels = take(ds, tensors, n)
        accs = R.rotation_curve(
            model, imgs, labels, angles, rotate=hooks.rotate_fn, prepare=prepare, batch_size=bs, device=dev
        )
        result["rotation"] = {"angles_deg": angles, "accuracy": accs, "images": len(imgs)}
        inv_imgs, _ = take(ds, tensors, max(1, cfg.invariance_subset))
        result["invariance"] = R.invariance_check(
            model, inv_imgs, prepare=prepare, batch_size=bs, device=dev, group=cfg.group
        )
    return result


def format_result(result: dict[str, Any]) -> str:
    """Human-readable lines for ``gsa eval``."""
    lines = [
        f"{result['split']} accuracy {100 * result['accuracy']:.2f}% (loss {result['loss']:.4f}, "
        f"{result['images']} images) - {result['checkpoint']}"
    ]
    rot = result.get("rotation")
    if rot:
        lines.append("rotation (deg)  accuracy")
        for a, acc in zip(rot["angles_deg"], rot["accuracy"]):
            lines.append(f"{a:>14g}  {100 * acc:6.2f}%")
        accs = rot["accuracy"]
        lines.append(
            f"over {len(accs)} angles on {rot['images']} images: mean {100 * sum(accs) / len(accs):.2f}%, "
            f"min {100 * min(accs):.2f}%, max {100 * max(accs):.2f}%"
        )
    inv = result.get("invariance")
    if inv:
        lines.append(
            f"invariance check: max |logit change| under {inv.get('under', '90-degree rotations')} "
            f"{inv['max_abs_logit_change']:.2e} "
            f"(relative {inv['max_rel_logit_change']:.2e}, predictions agree {100 * inv['prediction_agreement']:.1f}%, "
            f"{inv['images']} images)"
        )
    return "\n".join(lines)
