"""``gsa.train.train``: one training run, from config to ``report.json``.

Order of events: set up (DDP, seeds, data, model, optimizer) -> optionally resume from
``last.state.pt`` -> for each epoch: train, validate, keep the best-on-validation
weights, write ``metrics.csv`` / TensorBoard / ``last.*`` checkpoints -> evaluate the
test split once with the best weights -> rotation curve, invariance check,
``report.json`` and ``rotation.png``. The test split is never used for model selection.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import time
from pathlib import Path
from typing import Any, Optional, TextIO

import torch
from torch import nn
from torch.utils.data import Subset

from . import checkpoint as ckpt
from . import distributed as D
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingInterrupted
from .hooks import DataSpec, Hooks, get_hooks
from .loaders import EvalBatches, TrainBatches, eval_limit, materialize, take
from .device import resolve_device
from .optim import build_optimizer, build_scheduler
from .rng import get_rng_state, seed_everything, set_rng_state
from .signals import StopFlag
from .steps import compute_loss, evaluate, make_prepare
from .metrics import CsvLog, Meter, TensorBoardLog
from .precision import Precision
from .progress import Progress
from . import reporting as R


@dataclasses.dataclass
class _Position:
    """Where training stands (saved in ``last.state.pt``)."""

    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # batches of ``epoch`` already done
    step: int = 0  # optimizer steps done (attempted; AMP-skipped ones included)
    best_acc: float = -1.0
    best_epoch: int = -1
    best_step: int = -1
    skipped_steps: int = 0
    train_seconds: float = 0.0
    train_images: float = 0.0
    epoch_seconds: list = dataclasses.field(default_factory=list)
    meter: dict = dataclasses.field(default_factory=dict)
    epoch_elapsed: float = 0.0


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.recipe}-{cfg.dataset}-{cfg.group}-{stamp}"


def load_data(cfg: TrainConfig, hooks: Hooks, splits=("train", "valid", "test")) -> tuple[DataSpec, dict[str, Any], dict[str, Any]]:
    """Dataset metadata, datasets and (when small enough) their stacked tensors."""
    spec = hooks.info_fn(cfg.dataset)
    datasets, tensors = {}, {}
    for split in splits:
        ds = hooks.dataset_fn(cfg, split)
        if split == "train" and cfg.train_subset is not None and cfg.train_subset < len(ds):
            ds = Subset(ds, range(cfg.train_subset))
        datasets[split] = ds
        if cfg.loader == "dataloader":
            tensors[split] = None
        else:
            tensors[split] = materialize(ds, force=(cfg.loader == "tensor"))
    return spec, datasets, tensors


def build_model(cfg: TrainConfig, spec: DataSpec, hooks: Hooks, device: torch.device) -> nn.Module:
    model = hooks.model_fn(cfg, spec)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory returned {type(model).__name__}, not an nn.Module")
    return model.to(device)


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    hooks: Optional[Hooks] = None,
    stream: Optional[TextIO] = None,
) -> dict[str, Any]:
    """Train according to ``cfg``; return the report (also written to ``<out>/report.json``).

    ``resume=True`` continues the run in ``cfg.out`` from ``last.state.pt``.
    Raises :class:`ConfigError`, :class:`CheckpointError`, :class:`NonFiniteLossError`
    or :class:`TrainingInterrupted` (after saving) on failure.
    """
    cfg.validate()
    hooks = hooks or get_hooks()
    device = resolve_device(cfg.device)
    dist = D.setup(device.type)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        report = _train(cfg, resume=resume, hooks=hooks, stream=stream, dist=dist)
        # rank 0 does extra work at the end (test set, report, plot); without this barrier the other
        # ranks tear gloo down under it and abort ("terminate called without an active exception").
        # Only on success: after an error a barrier could wait for a rank that is gone.
        D.barrier(dist)
        return report
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        D.teardown(dist)


def _train(cfg: TrainConfig, *, resume: bool, hooks: Hooks, stream: Optional[TextIO], dist: D.DistInfo) -> dict[str, Any]:
    device = resolve_device(cfg.device, dist)
    per_batch = D.per_process_batch(cfg.batch_size, dist.world_size)
    main = dist.is_main
    progress = Progress(cfg.progress, enabled=main, log_every=cfg.log_every, stream=stream)

    # ---------------------------------------------------------------- run directory
    if resume and not cfg.out:
        raise ConfigError("--resume needs the run directory")
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    run_dir = Path(D.broadcast_object(str(run_dir), dist))
    state_path, last_path, best_path = run_dir / ckpt.STATE, run_dir / ckpt.LAST, run_dir / ckpt.BEST
    if resume:
        if not state_path.is_file() or not last_path.is_file():
            raise ConfigError(f"--resume {run_dir}: no checkpoint to resume from ({state_path.name} / {last_path.name} missing)")
    elif state_path.exists() or last_path.exists():
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    cfg = dataclasses.replace(cfg, out=str(run_dir))

    # ---------------------------------------------------------------- data and model
    seed_everything(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    spec, datasets, tensors = load_data(cfg, hooks)
    if device.type == "cuda":  # small in-memory splits live on the GPU: no per-batch copies
        tensors = {k: _to_device_if_small(v, device) for k, v in tensors.items()}
    model = build_model(cfg, spec, hooks, device)
    n_params = R.param_count(model)
    seed_everything(cfg.seed + 1000 * dist.rank)  # training RNG stream (dropout) per process

    train_batches = TrainBatches(
        datasets["train"], tensors["train"], per_batch, cfg.seed, dist.rank, dist.world_size, cfg.workers,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = train_batches.steps_per_epoch()
    if steps_per_epoch == 0:
        raise ConfigError(f"dataset {cfg.dataset!r} has an empty train split")
    eval_bs = cfg.effective_eval_batch_size()
    limit = eval_limit(cfg.eval_subset, cfg.max_eval_batches, eval_bs)

    def eval_batches(split: str) -> EvalBatches:
        return EvalBatches(
            datasets[split], tensors[split], eval_bs, limit, dist.rank, dist.world_size, cfg.workers,
            pin_memory=device.type == "cuda",
        )

    if dist.enabled:
        ddp_kw: dict[str, Any] = {"device_ids": [device.index]} if device.type == "cuda" else {}
        net: nn.Module = nn.parallel.DistributedDataParallel(model, **ddp_kw)
    else:
        net = model
    if main:  # created only once data and model are known to work
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier(dist)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    precision = Precision(cfg.precision, device)
    prepare = make_prepare(spec.mean if cfg.normalize else None, spec.std if cfg.normalize else None, device)
    max_steps = cfg.max_steps or math.inf

    # ---------------------------------------------------------------- resume
    pos = _Position()
    best_weights: Optional[dict[str, torch.Tensor]] = None
    if resume:
        pos, best_weights = _restore(cfg, run_dir, model, optimizer, scheduler, precision, device, dist, progress)
    if main:
        cfg.save(run_dir)
    csv_log = CsvLog(run_dir) if main else None
    tb = TensorBoardLog(run_dir, enabled=cfg.tensorboard and main)
    R.reset_peak_memory(device)

    sizes = " / ".join(f"{s} {_split_len(datasets[s], tensors[s])}" for s in ("train", "valid", "test"))
    patch = R.patch_label(cfg.patch_size)
    kernels = ""
    if device.type == "cpu":
        from gsa.nn import native

        kernels = ", native kernels" if native.available() else ", PyTorch kernels"
    progress.log(
        f"gsa train: recipe {cfg.recipe} | dataset {cfg.dataset} ({sizes}) | model {cfg.preset} {cfg.group} {patch}, "
        f"{n_params:,} params | {device.type}{kernels}, {cfg.precision}, {dist.world_size} process(es) | "
        f"batch {cfg.batch_size}, "
        f"{steps_per_epoch} steps/epoch | out {run_dir}"
    )
    if resume:
        progress.log(f"resuming at epoch {pos.epoch + 1}, batch {pos.batch}, step {pos.step}")

    stop = StopFlag()
    best_box = [best_weights]
    try:
        with stop.installed():
            stopped_reason = _fit(
                cfg, pos, net, model, optimizer, scheduler, precision, prepare, train_batches, eval_batches,
                steps_per_epoch, max_steps, device, dist, progress, stop, csv_log, tb, run_dir, best_box,
            )
        best_weights = best_box[0]
    finally:
        tb.close()
        progress.end()

    # ---------------------------------------------------------------- final test with the best weights
    if best_weights is not None:
        model.load_state_dict(best_weights)
    elif best_path.is_file():
        ckpt.load_weights(best_path, model)
    test_meter, _ = evaluate(model, eval_batches("test"), prepare=prepare, precision=precision, device=device)
    test = test_meter.reduced(device, dist)

    report: dict[str, Any] = {}
    if main:
        report = _final_report(
            cfg, run_dir, model, spec, hooks, datasets, tensors, prepare, device, dist, pos, test, n_params,
            steps_per_epoch, stopped_reason, limit, progress,
        )
    report = D.broadcast_object(report, dist)
    return report


def _to_device_if_small(pair: Any, device: torch.device, max_bytes: int = 2 << 30) -> Any:
    if pair is None:
        return None
    x, y = pair
    if x.numel() * x.element_size() > max_bytes:
        return pair
    return x.to(device), y.to(device)


def _split_len(ds: Any, t: Any) -> int:
    return len(t[0]) if t is not None else len(ds)


def _restore(cfg, run_dir, model, optimizer, scheduler, precision, device, dist, progress):
    state = ckpt.load_state(run_dir / ckpt.STATE)
    meta = ckpt.load_weights(run_dir / ckpt.LAST, model)
    if str(state["step"]) != meta.get("step", str(state["step"])):
        raise CheckpointError(
            f"{run_dir / ckpt.LAST}: weights are from step {meta.get('step')} but {ckpt.STATE} is from step "
            f"{state['step']}; the run directory is inconsistent"
        )
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{run_dir / ckpt.STATE}: does not match this optimizer/config ({exc})") from None
    precision.load_state_dict(state.get("scaler") or {})
    rngs = state.get("rng") or []
    if len(rngs) == dist.world_size:
        set_rng_state(rngs[dist.rank], device)
    else:
        progress.log(
            f"warning: checkpoint was written by {len(rngs)} process(es), now {dist.world_size}; "
            "random streams restart (the data order stays seeded)"
        )
    pos = _Position(**{k: v for k, v in state["position"].items() if k in {f.name for f in dataclasses.fields(_Position)}})
    best = None
    if (run_dir / ckpt.BEST).is_file():
        best, _ = ckpt.read_weights(run_dir / ckpt.BEST)
    return pos, best


def _save_last(run_dir, model, optimizer, scheduler, precision, device, dist, pos: _Position, cfg: TrainConfig) -> None:
    """All processes take part (RNG states are gathered); rank 0 writes."""
    rngs = D.gather_objects(get_rng_state(device), dist) if dist.enabled else [get_rng_state(device)]
    if not dist.is_main:
        return
    state = {
        "format": "gsa-state-1",
        "step": pos.step,
        "position": dataclasses.asdict(pos),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": precision.state_dict(),
        "rng": [_to_cpu(r) for r in rngs],
        "world_size": dist.world_size,
        "config": cfg.to_dict(),
    }
    # state first, then weights: if we die in between, resume reports the step mismatch
    ckpt.save_state(run_dir / ckpt.STATE, state)
    ckpt.save_weights(run_dir / ckpt.LAST, model, _meta(cfg, pos))


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def _meta(cfg: TrainConfig, pos: _Position, **extra: Any) -> dict[str, Any]:
    return {
        "step": pos.step,
        "epoch": pos.epoch,
        "preset": cfg.preset,
        "group": cfg.group,
        "patch_size": cfg.patch_size,
        "dataset": cfg.dataset,
        **extra,
    }


def _fit(
    cfg, pos, net, model, optimizer, scheduler, precision, prepare, train_batches, eval_batches,
    steps_per_epoch, max_steps, device, dist, progress, stop, csv_log, tb, run_dir, best_box,
) -> str:
    """The epoch loop. Returns why it ended: "completed" or "max_steps"."""
    world = dist.world_size
    stop_check = (lambda: stop.requested) if not dist.enabled else (lambda: False)

    def save_and_interrupt(where: str) -> None:
        _save_last(run_dir, model, optimizer, scheduler, precision, device, dist, pos, cfg)
        raise TrainingInterrupted(
            f"interrupted ({stop.signal_name or 'signal'}) {where} at step {pos.step}; checkpoint saved to "
            f"{run_dir / ckpt.LAST}; continue with: gsa train --resume {run_dir}",
            step=pos.step,
        )

    while pos.epoch < cfg.epochs:
        if pos.step >= max_steps:
            return "max_steps"
        epoch = pos.epoch
        meter = Meter(**pos.meter) if pos.meter else Meter()
        net.train()
        progress.start(f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch, initial=pos.batch)
        t_start = time.perf_counter() - pos.epoch_elapsed
        t_train0 = time.perf_counter()
        images_here = 0
        capped = False
        for x, y in train_batches.epoch(epoch, pos.batch):
            x = prepare(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            with precision.autocast():
                out = net(x)
            logits = out.float()  # fp32 logits and loss, whatever the autocast dtype
            loss = compute_loss(logits, y)
            finite = bool(torch.isfinite(loss))
            stop_now, bad = D.any_flags([stop.requested, not finite], device, dist)
            if bad:
                last = f"{run_dir / ckpt.LAST}" if (run_dir / ckpt.LAST).exists() else "none written yet"
                value = f"{float(loss.detach())}" if not finite else "nan/inf on another process"
                raise NonFiniteLossError(
                    f"non-finite loss ({value}) at step {pos.step + 1} (epoch {epoch + 1}, batch {pos.batch + 1}); "
                    f"stopped; last good checkpoint: {last}",
                    step=pos.step + 1,
                )
            optimizer.zero_grad(set_to_none=True)
            stepped, _ = precision.backward_and_step(loss, optimizer, model.parameters(), cfg.grad_clip)
            if stepped:
                scheduler.step()
            else:
                pos.skipped_steps += 1  # fp16 overflow: GradScaler skipped it; keep the schedule in place
            pos.step += 1
            pos.batch += 1
            meter.add(logits, y, loss)
            images_here += len(y) * world
            elapsed = time.perf_counter() - t_train0
            progress.update(pos.batch, pos.step, meter.loss, meter.accuracy, images_here / max(elapsed, 1e-9))
            if stop_now:
                progress.end()
                pos.meter = meter.state()
                pos.epoch_elapsed = time.perf_counter() - t_start
                pos.train_seconds += time.perf_counter() - t_train0
                pos.train_images += images_here
                save_and_interrupt("during training")
            if pos.step >= max_steps and pos.batch < steps_per_epoch:
                capped = True
                break
        progress.end()
        train_elapsed = time.perf_counter() - t_train0
        pos.train_seconds += train_elapsed
        pos.train_images += images_here
        pos.meter = meter.state()

        # ------------------------------------------------------------ validation + checkpoints
        vmeter, cut = evaluate(
            model, eval_batches("valid"), prepare=prepare, precision=precision, device=device, should_stop=stop_check
        )
        if cut or (dist.enabled and D.any_flags([stop.requested], device, dist)[0]):
            pos.epoch_elapsed = time.perf_counter() - t_start
            save_and_interrupt("during validation")
        train_m = meter.reduced(device, dist)
        valid = vmeter.reduced(device, dist)
        epoch_seconds = time.perf_counter() - t_start
        if not capped:
            pos.epoch_seconds.append(epoch_seconds)
        improved = valid.accuracy > pos.best_acc
        if improved:
            pos.best_acc, pos.best_epoch, pos.best_step = valid.accuracy, epoch + 1, pos.step
            best_box[0] = ckpt.state_dict_tensors(model)
            if dist.is_main:
                ckpt.save_weights(run_dir / ckpt.BEST, model, _meta(cfg, pos, valid_acc=f"{valid.accuracy:.6f}"))
        lr = optimizer.param_groups[0]["lr"]
        ips = images_here / max(train_elapsed, 1e-9)
        row = {
            "epoch": epoch + 1,
            "step": pos.step,
            "train_loss": train_m.loss,
            "train_acc": train_m.accuracy,
            "valid_loss": valid.loss,
            "valid_acc": valid.accuracy,
            "lr": lr,
            "epoch_seconds": epoch_seconds,
            "images_per_s": ips,
            "best_valid_acc": pos.best_acc,
        }
        if csv_log is not None:
            csv_log.append(row)
        tb.scalars(
            {
                "loss/train": train_m.loss,
                "loss/valid": valid.loss,
                "accuracy/train": train_m.accuracy,
                "accuracy/valid": valid.accuracy,
                "lr": lr,
                "throughput/images_per_s": ips,
            },
            pos.step,
        )
        progress.log(
            f"epoch {epoch + 1}/{cfg.epochs} step {pos.step} | train loss {train_m.loss:.4f} acc {100 * train_m.accuracy:.2f}% | "
            f"valid loss {valid.loss:.4f} acc {100 * valid.accuracy:.2f}%{' (best)' if improved else ''} | "
            f"lr {lr:.3g} | {epoch_seconds:.1f} s, {ips:.3g} img/s"
        )
        if not capped:
            pos.epoch, pos.batch, pos.meter, pos.epoch_elapsed = epoch + 1, 0, {}, 0.0
        else:
            pos.epoch_elapsed = epoch_seconds
        _save_last(run_dir, model, optimizer, scheduler, precision, device, dist, pos, cfg)
        if capped:
            return "max_steps"
    return "completed"


def _final_report(
    cfg, run_dir, model, spec, hooks, datasets, tensors, prepare, device, dist, pos, test, n_params,
    steps_per_epoch, stopped_reason, limit, progress,
) -> dict[str, Any]:
    eval_bs = cfg.effective_eval_batch_size()
    rotation: dict[str, Any] = {}
    angles = R.rotation_angles(cfg.rotation_step)
    if angles:
        imgs, labels = take(datasets["test"], tensors["test"], cfg.rotation_subset)
        accs = R.rotation_curve(
            model, imgs, labels, angles, rotate=hooks.rotate_fn, prepare=prepare, batch_size=eval_bs, device=device
        )
        R.plot_rotation(run_dir / R.ROTATION_FILE, angles, accs, R.rotation_title(cfg, len(imgs)))
        rotation = R.summarize_rotation(angles, accs, len(imgs))
    invariance: dict[str, Any] = {}
    if cfg.invariance_subset > 0:
        imgs, _ = take(datasets["test"], tensors["test"], cfg.invariance_subset)
        invariance = R.invariance_check(model, imgs, prepare=prepare, batch_size=eval_bs, device=device)

    position = dataclasses.asdict(pos)
    report = R.build_report(
        R.summarize_test(test),
        R.summarize_progress(position, steps_per_epoch, stopped_reason),
        R.summarize_timing(position, steps_per_epoch),
        R.summarize_environment(device, dist.world_size, cfg.precision),
        R.summarize_run(cfg, n_params, limit),
        {"rotation": rotation, "invariance": invariance},
    )
    R.write_report(run_dir, report)
    for line in R.report_lines(report):
        progress.log(line)
    progress.log(f"report: {run_dir / R.REPORT_FILE}")
    return report
