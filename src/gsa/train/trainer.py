"""The :class:`Trainer`: one training run's state and its phases.

Order of events (:meth:`Trainer.run`): set up (seeds, data, model, optimizer; in the
constructor) -> optionally :meth:`~Trainer.restore` from ``last.state.pt`` ->
:meth:`~Trainer.begin` -> :meth:`~Trainer.fit`: for each epoch, train, :meth:`~Trainer.validate`,
keep the best-on-validation weights, write ``metrics.csv`` / TensorBoard /
:meth:`~Trainer.save_last` -> :meth:`~Trainer.test` once with the best weights ->
:meth:`~Trainer.final_report`. The test split is never used for model selection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from typing import Any, Iterator, Optional, TextIO

import torch
from torch import nn

from .. import openmp
from ..errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingInterrupted
from . import checkpoint as ckpt
from . import distributed as D
from . import reporting as R
from .build import SPLITS, build_model, claim_run_dir, load_data, to_device_if_small
from .config import CONFIG_FILE, TrainConfig
from .device import resolve_device
from .ema import make_ema
from .hooks import Hooks, get_hooks, input_stats
from .identity import check_identity
from .loaders import EvalBatches, TrainBatches, dataset_len, eval_limit, take
from .metrics import CSV_FILE, CsvLog, Meter, TensorBoardLog, require_tensorboard
from .optim import build_optimizer, build_scheduler
from .precision import Precision, check_for_training
from .progress import Progress
from .resume import apply_settings, check_settings
from .rng import get_rng_state, rng_state_to_cpu, seed_everything, set_rng_state
from .rundir import RunLock
from .signals import StopFlag
from .state import Epoch, Position, weights_metadata
from .steps import compute_loss, evaluate, make_prepare

__all__ = ["Trainer", "require_extras"]


def require_extras(cfg: TrainConfig) -> None:
    """Check, before a run starts, that the optional dependencies it will use are installed:
    TensorBoard when ``cfg.tensorboard``, matplotlib when ``cfg.rotation_step`` draws
    ``rotation.png``. Raises :class:`~gsa.errors.MissingDependencyError` naming the extra."""
    if cfg.tensorboard:
        require_tensorboard()
    if R.rotation_angles(cfg.rotation_step):
        R.require_matplotlib()


class Trainer:
    """One training run: owns its state and runs its phases.

    The constructor sets the run up: creates and locks the run directory (``cfg.out``, or a new
    ``runs/<recipe>-<dataset>-<group>-<time>``; another run holding the lock is an error) and checks
    it (with ``resume=True`` it must hold a last pair — ``last.json``, or ``last.state.pt`` and
    ``last.safetensors`` — otherwise it must hold no other run's files), seeds, loads the data,
    builds model, optimizer, scheduler and precision, and removes temporaries and an incomplete pair
    an interrupted save left there; if any of that fails, the lock is released and a directory
    created for the run removed again. :meth:`run` then does the rest and releases the lock
    (:meth:`close`); :func:`gsa.train.train` wraps it with the ``torch.distributed`` setup/teardown
    and restores the deterministic-algorithms setting. A write that fails in the run directory (a
    full disk) is a one-line :class:`~gsa.errors.CheckpointError`; the files already there stay as
    they were.

    Args:
        cfg: the run's configuration (validated here).
        resume: continue the run in ``cfg.out`` (see :meth:`restore`).
        hooks: model/data/rotation factories (default: the current ones, :func:`~gsa.train.hooks.get_hooks`).
        dist: this process's place in a distributed job, from :func:`gsa.train.distributed.setup`
            (default: a single process).
        stream: where console output goes (default: standard output).

    State:

    - ``cfg`` (with ``out`` set to ``run_dir``), ``run_dir``, ``run_lock`` (its
      :class:`~gsa.train.rundir.RunLock`, held by rank 0), ``hooks``, ``resume``
    - ``dist`` (:class:`~gsa.train.distributed.DistInfo`), ``device``
    - data: ``spec``, ``datasets`` and ``tensors`` (dicts by split; tensors are
      ``(images [N, C, H, W], labels [N])`` or ``None``), ``train_batches``,
      ``steps_per_epoch``, ``eval_batch_size``, ``eval_limit``
    - ``model`` (plain) and ``net`` (what trains: ``model`` or its DDP wrapper), ``n_params``
    - ``ema`` (with ``--ema``: the weights' moving average, :func:`~gsa.train.ema.make_ema`; its
      ``module`` is :attr:`eval_model`, what validation, ``best.safetensors`` and the test use)
    - ``optimizer``, ``scheduler`` (per step), ``precision`` (autocast and fp16 scaler),
      ``prepare`` (input normalisation), ``max_steps`` (``inf`` without ``--max-steps``)
    - ``pos`` (:class:`~gsa.train.state.Position`, saved in ``last.state.pt``), ``best_weights``
      (best-on-validation weights, in memory), ``stop`` (:class:`~gsa.train.signals.StopFlag`)
    - ``progress`` (console, on ``stream``), ``csv_log`` and ``tb`` (``metrics.csv``,
      TensorBoard; opened by :meth:`begin`)

    Phases: :meth:`restore`, :meth:`begin`, :meth:`fit` (per epoch :meth:`train_epoch`,
    :meth:`validate`, :meth:`end_epoch`), :meth:`save_last`, :meth:`test`, :meth:`final_report`.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool = False,
        hooks: Optional[Hooks] = None,
        dist: Optional[D.DistInfo] = None,
        stream: Optional[TextIO] = None,
    ) -> None:
        cfg.validate()
        self.hooks = hooks or get_hooks()
        self.dist = dist or D.DistInfo()
        if self.dist.is_main:
            require_extras(cfg)
        self.resume = resume
        self.device = resolve_device(cfg.device, self.dist)
        per_batch = D.per_process_batch(cfg.batch_size, self.dist.world_size)
        self.progress = Progress(cfg.progress, enabled=self.dist.is_main, log_every=cfg.log_every, stream=stream)
        self.run_lock = RunLock()  # rank 0 holds it until close() (run() closes at its end)
        try:
            self.run_dir = claim_run_dir(cfg, resume, self.dist, lock=self.run_lock)
            self.cfg = dataclasses.replace(cfg, out=str(self.run_dir))
            self._load_data_and_model(per_batch)
            self._build_optimization()
        except BaseException:
            self.run_lock.release(remove_empty_dir=True)  # a failed set-up leaves no empty directory
            raise
        self.pos = Position()
        self.best_weights: Optional[dict[str, torch.Tensor]] = None
        self.stop = StopFlag()
        self.csv_log: Optional[CsvLog] = None
        self.tb = TensorBoardLog(self.run_dir, enabled=False)  # a no-op until begin()

    def _load_data_and_model(self, per_batch: int) -> None:
        cfg, dist, device = self.cfg, self.dist, self.device
        seed_everything(cfg.seed)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.spec, self.datasets, tensors = load_data(cfg, self.hooks)
        if device.type == "cuda":  # small in-memory splits live on the GPU: no per-batch copies
            tensors = {k: to_device_if_small(v, device) for k, v in tensors.items()}
        self.tensors = tensors
        self.model = build_model(cfg, self.spec, self.hooks, device)
        self.n_params = R.param_count(self.model)
        seed_everything(cfg.seed + 1000 * dist.rank)  # training RNG stream (dropout) per process
        self.train_batches = TrainBatches(
            self.datasets["train"],
            tensors["train"],
            per_batch,
            cfg.seed,
            dist.rank,
            dist.world_size,
            cfg.workers,
            pin_memory=device.type == "cuda",
        )
        self.steps_per_epoch = self.train_batches.steps_per_epoch()
        if self.steps_per_epoch == 0:
            raise ConfigError(f"dataset {cfg.dataset!r} has an empty train split")
        self.eval_batch_size = cfg.effective_eval_batch_size()
        self.eval_limit = eval_limit(cfg.eval_subset, cfg.max_eval_batches, self.eval_batch_size)

    def _build_optimization(self) -> None:
        cfg, device = self.cfg, self.device
        check_for_training(cfg.precision, device)
        if self.dist.enabled:
            ddp_kw: dict[str, Any] = {"device_ids": [device.index]} if device.type == "cuda" else {}
            self.net: nn.Module = nn.parallel.DistributedDataParallel(self.model, **ddp_kw)
        else:
            self.net = self.model
        if self.dist.is_main:  # the directory is ours (locked); clear what an interrupted save left
            removed = ckpt.clean_run_dir(self.run_dir, also=(CONFIG_FILE, R.REPORT_FILE))
            if removed:
                self.progress.log(f"removed what an interrupted save left in {self.run_dir}: {', '.join(removed)}")
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps_per_epoch)
        self.ema = make_ema(self.model, cfg.ema) if cfg.ema is not None else None
        self.precision = Precision(cfg.precision, device)
        self.prepare = make_prepare(*input_stats(cfg, self.spec), device)
        self.max_steps = cfg.max_steps or math.inf

    @property
    def eval_model(self) -> nn.Module:
        """The network validation evaluates and ``best.safetensors`` keeps: the moving average of the
        weights with ``--ema`` (:mod:`gsa.train.ema`), else ``model``."""
        return self.ema.module if self.ema is not None else self.model

    def eval_batches(self, split: str) -> EvalBatches:
        """This process's share of the evaluation batches of ``split`` (within ``eval_limit``)."""
        return EvalBatches(
            self.datasets[split],
            self.tensors[split],
            self.eval_batch_size,
            self.eval_limit,
            self.dist.rank,
            self.dist.world_size,
            self.cfg.workers,
            pin_memory=self.device.type == "cuda",
        )

    # ------------------------------------------------------------------ the whole run
    def run(self) -> dict[str, Any]:
        """Restore (when resuming), fit, test, report; the report on every process. The run
        directory's lock is released at the end, however the run ends."""
        with self:
            if self.resume:
                self.restore()
            self.begin()
            try:
                stopped = self.fit()
            finally:
                self.tb.close()
                self.progress.end()
            test = self.test()
            report = self.final_report(test, stopped) if self.dist.is_main else {}
            return D.broadcast_object(report, self.dist)

    def close(self) -> None:
        """Release the run directory's lock (another run may use the directory from then on).

        :meth:`run` does this at its end; a Trainer driven phase by phase is closed by hand
        or used as a context manager (``with Trainer(cfg) as trainer: ...``).
        """
        self.run_lock.release()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Turn an ``OSError`` while writing ``what`` into the run directory (a full disk, a
        read-only mount) into a one-line :class:`CheckpointError`; the files already there are
        kept (each is replaced atomically)."""
        try:
            yield
        except OSError as exc:
            then = (
                f"the last checkpoint is kept; once fixed, continue with: gsa train --resume {self.run_dir}"
                if ckpt.has_last(self.run_dir)
                else "no checkpoint was written yet"
            )
            raise CheckpointError(f"cannot write {what} in {self.run_dir} ({exc.strerror or exc}); {then}") from None

    def begin(self) -> None:
        """Write ``config.json``, open ``metrics.csv`` / TensorBoard, reset the peak-memory
        counter and print the run's first line(s)."""
        main = self.dist.is_main
        if main:
            with self._writing(CONFIG_FILE):
                self.cfg.save(self.run_dir)
        self.csv_log = CsvLog(self.run_dir) if main else None
        self.tb = TensorBoardLog(self.run_dir, enabled=self.cfg.tensorboard and main)
        R.reset_peak_memory(self.device)
        self.progress.log(self.banner())
        if self.resume:
            pos = self.pos
            self.progress.log(f"resuming at epoch {pos.epoch + 1}, batch {pos.batch}, step {pos.step}")

    def banner(self) -> str:
        """One line: recipe, data sizes, model, device, precision, processes, batch, output directory."""
        cfg, device = self.cfg, self.device
        sizes = " / ".join(f"{s} {dataset_len(self.datasets[s], self.tensors[s])}" for s in SPLITS)
        kernels = ""
        if device.type == "cpu":
            from gsa.nn import native

            kernels = ", native kernels" if native.available() else ", PyTorch kernels"
            kernels += f", OpenMP {openmp.wait_mode()}"
        ema = f", EMA {cfg.ema:g}" if cfg.ema is not None else ""
        return (
            f"gsa train: recipe {cfg.recipe} | dataset {cfg.dataset} ({sizes}) | model {cfg.preset} {cfg.group} "
            f"{R.patch_label(cfg.patch_size)}, {self.n_params:,} params | {device.type}{kernels}, {cfg.precision}, "
            f"{self.dist.world_size} process(es) | batch {cfg.batch_size}, {self.steps_per_epoch} steps/epoch{ema} | "
            f"out {self.run_dir}"
        )

    # ------------------------------------------------------------------ checkpoints
    def restore(self) -> None:
        """Continue from the last pair (``last.state.pt`` + ``last.safetensors``, as ``last.json``
        names them; :func:`~gsa.train.checkpoint.find_last`): weights, optimizer, schedule, fp16
        scaler, RNG streams, position, and the best weights so far.

        Settings that differ from the recorded ones are honoured or refused per
        :data:`gsa.train.resume.RULES` (:class:`ConfigError` for a refused change). Raises
        :class:`CheckpointError` when a file's checksum is wrong, the two files disagree or they do
        not fit this config.
        """
        pair = ckpt.find_last(self.run_dir)  # the pair last.json switched in (verified), or a pre-manifest pair
        if pair is None:
            raise CheckpointError(f"{self.run_dir}: no checkpoint to resume from")
        state_path, last_path = pair.state, pair.weights
        state = ckpt.load_state(state_path, sha256=pair.state_sha256)
        check_settings(state.get("config"), self.cfg, Position.from_dict(state["position"]))
        meta = ckpt.load_weights(last_path, self.model, self.cfg)
        if str(state["step"]) != meta.get("step", str(state["step"])):
            raise CheckpointError(
                f"{last_path}: weights are from step {meta.get('step')} but {ckpt.STATE} is from step "
                f"{state['step']}; the run directory is inconsistent"
            )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{state_path}: does not match this optimizer/config ({exc})") from None
        apply_settings(self.cfg, self.optimizer, self.scheduler, self.steps_per_epoch)
        if self.ema is not None:
            self._restore_ema(state, state_path)
        self.precision.load_state_dict(state.get("scaler") or {})
        rngs = state.get("rng") or []
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank], self.device)
        else:
            self.progress.log(
                f"warning: checkpoint was written by {len(rngs)} process(es), now {self.dist.world_size}; "
                "random streams restart (the data order stays seeded)"
            )
        self.pos = Position.from_dict(state["position"])
        if (self.run_dir / ckpt.BEST).is_file():
            self.best_weights, best_meta = ckpt.read_weights(self.run_dir / ckpt.BEST)
            check_identity(best_meta, self.model, self.cfg, self.run_dir / ckpt.BEST)

    def _restore_ema(self, state: dict[str, Any], state_path: Any) -> None:
        if "ema" not in state:
            raise CheckpointError(f"{state_path}: holds no moving average of the weights, but the run uses --ema")
        try:
            self.ema.load_state_dict(state["ema"])
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{state_path}: its moving average does not match this network ({exc})") from None

    def save_last(self) -> None:
        """Write the last pair, ``last.safetensors`` + ``last.state.pt``, switched in at once by
        ``last.json`` (:func:`~gsa.train.checkpoint.save_last`): a crash at any point leaves the
        previous pair or the new one.

        All processes take part (RNG states are gathered); rank 0 writes.
        """
        device, dist = self.device, self.dist
        bad = [
            name for name, t in self.model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()
        ]
        if bad:  # never replace the last good checkpoint with non-finite weights
            raise NonFiniteLossError(
                f"non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) at step "
                f"{self.pos.step}; not saved; last good checkpoint: {self.run_dir / ckpt.LAST}",
                step=self.pos.step,
            )
        rngs = D.gather_objects(get_rng_state(device), dist) if dist.enabled else [get_rng_state(device)]
        if not dist.is_main:
            return
        state = {
            "format": "gsa-state-1",
            "step": self.pos.step,
            "position": dataclasses.asdict(self.pos),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.state_dict(),
            "rng": [rng_state_to_cpu(r) for r in rngs],
            "world_size": dist.world_size,
            "config": self.cfg.to_dict(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        ckpt.save_last(self.run_dir, self.model, weights_metadata(self.cfg, self.pos, self.model, self.spec), state)

    def _save_and_interrupt(self, where: str) -> None:
        with self._writing("the checkpoint"):
            self.save_last()
        raise TrainingInterrupted(
            f"interrupted ({self.stop.signal_name or 'signal'}) {where} at step {self.pos.step}; checkpoint saved to "
            f"{self.run_dir / ckpt.LAST}; continue with: gsa train --resume {self.run_dir}",
            step=self.pos.step,
        )

    # ------------------------------------------------------------------ training
    def fit(self) -> str:
        """The epoch loop, from the current position; returns why it ended: ``"completed"`` or
        ``"max_steps"``.

        SIGINT/SIGTERM save ``last.*`` and raise :class:`TrainingInterrupted`; a non-finite
        loss raises :class:`NonFiniteLossError` (the last checkpoint stays as it was).
        """
        with self.stop.installed():
            while self.pos.epoch < self.cfg.epochs:
                if self.pos.step >= self.max_steps:
                    return "max_steps"
                epoch = self.train_epoch()
                valid = self.validate(epoch)
                self.end_epoch(epoch, valid)
                if epoch.capped:
                    return "max_steps"
        return "completed"

    def train_epoch(self) -> Epoch:
        """Train on the rest of the current epoch (from ``pos.batch``), or until ``max_steps``."""
        pos = self.pos
        meter = Meter(**pos.meter) if pos.meter else Meter()
        self.net.train()
        self.progress.start(f"epoch {pos.epoch + 1}/{self.cfg.epochs}", self.steps_per_epoch, initial=pos.batch)
        epoch = Epoch(pos.epoch, meter, t_start=time.perf_counter() - pos.epoch_elapsed, t_train0=time.perf_counter())
        for x, y in self.train_batches.epoch(epoch.index, pos.batch):
            if self.train_step(x, y, epoch):
                self._interrupt_training(epoch)
            if pos.step >= self.max_steps and pos.batch < self.steps_per_epoch:
                epoch.capped = True
                break
        self.progress.end()
        epoch.train_seconds = time.perf_counter() - epoch.t_train0
        pos.train_seconds += epoch.train_seconds
        pos.train_images += epoch.images
        pos.meter = meter.state()
        return epoch

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: Epoch) -> bool:
        """One optimizer step on the batch ``(x [B, C, H, W], y [B])``; returns whether any
        process was asked to stop (by a signal)."""
        pos, device = self.pos, self.device
        x = self.prepare(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        with self.precision.autocast():
            out = self.net(x)
        logits = out.float()  # fp32 logits and loss, whatever the autocast dtype
        loss = compute_loss(logits, y)
        finite = bool(torch.isfinite(loss))
        stop_now, bad = D.any_flags([self.stop.requested, not finite], device, self.dist)
        if bad:
            self._raise_non_finite(loss, finite, epoch.index)
        self.optimizer.zero_grad(set_to_none=True)
        stepped, grad_norm = self.precision.backward_and_step(
            loss, self.optimizer, self.model.parameters(), self.cfg.grad_clip
        )
        if stepped:
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        elif not self.precision.scaler.is_enabled():
            self._raise_non_finite(loss, True, epoch.index, grad_norm=grad_norm)
        else:
            pos.skipped_steps += 1  # fp16 overflow: GradScaler skipped it; keep the schedule in place
        pos.step += 1
        pos.batch += 1
        epoch.meter.add(logits, y, loss)
        epoch.images += len(y) * self.dist.world_size
        elapsed = time.perf_counter() - epoch.t_train0
        self.progress.update(
            pos.batch, pos.step, epoch.meter.loss, epoch.meter.accuracy, epoch.images / max(elapsed, 1e-9)
        )
        return stop_now

    def _raise_non_finite(
        self, loss: torch.Tensor, finite: bool, epoch_index: int, grad_norm: Optional[float] = None
    ) -> None:
        pos, last_path = self.pos, self.run_dir / ckpt.LAST
        last = f"{last_path}" if last_path.exists() else "none written yet"
        if grad_norm is not None:
            what = (
                f"non-finite gradients (norm {grad_norm}; loss {float(loss.detach()):.4g}); the update was not applied"
            )
        else:
            value = f"{float(loss.detach())}" if not finite else "nan/inf on another process"
            what = f"non-finite loss ({value})"
        raise NonFiniteLossError(
            f"{what} at step {pos.step + 1} (epoch {epoch_index + 1}, batch {pos.batch + 1}); "
            f"stopped; last good checkpoint: {last}",
            step=pos.step + 1,
        )

    def _interrupt_training(self, epoch: Epoch) -> None:
        pos = self.pos
        self.progress.end()
        pos.meter = epoch.meter.state()
        pos.epoch_elapsed = time.perf_counter() - epoch.t_start
        pos.train_seconds += time.perf_counter() - epoch.t_train0
        pos.train_images += epoch.images
        self._save_and_interrupt("during training")

    def validate(self, epoch: Epoch) -> Meter:
        """Evaluate the validation split after ``epoch``'s training; the meter summed over processes.

        A stop request during it saves ``last.*`` (the epoch is redone on resume) and raises
        :class:`TrainingInterrupted`.
        """
        stop, dist = self.stop, self.dist
        should_stop = (lambda: stop.requested) if not dist.enabled else (lambda: False)
        meter, cut = evaluate(
            self.eval_model,
            self.eval_batches("valid"),
            prepare=self.prepare,
            precision=self.precision,
            device=self.device,
            should_stop=should_stop,
        )
        if cut or (dist.enabled and D.any_flags([stop.requested], self.device, dist)[0]):
            self.pos.epoch_elapsed = time.perf_counter() - epoch.t_start
            self._save_and_interrupt("during validation")
        return meter.reduced(self.device, dist)

    def end_epoch(self, epoch: Epoch, valid: Meter) -> None:
        """Keep the weights if best on validation, log the epoch, advance the position, save ``last.*``."""
        pos = self.pos
        train = epoch.meter.reduced(self.device, self.dist)
        epoch_seconds = time.perf_counter() - epoch.t_start
        if not epoch.capped:
            pos.epoch_seconds.append(epoch_seconds)
        with self._writing(ckpt.BEST):
            improved = self._keep_if_best(valid, epoch.index)
        with self._writing(f"the epoch's logs ({CSV_FILE}, tb)"):
            self._log_epoch(epoch, train, valid, improved, epoch_seconds)
        if not epoch.capped:
            pos.epoch, pos.batch, pos.meter, pos.epoch_elapsed = epoch.index + 1, 0, {}, 0.0
        else:
            pos.epoch_elapsed = epoch_seconds
        with self._writing("the checkpoint"):
            self.save_last()

    def _keep_if_best(self, valid: Meter, epoch_index: int) -> bool:
        pos = self.pos
        if not (math.isfinite(valid.loss) and valid.accuracy > pos.best_acc):
            return False  # a non-finite validation loss is never "best"
        pos.best_acc, pos.best_epoch, pos.best_step = valid.accuracy, epoch_index + 1, pos.step
        net = self.eval_model
        self.best_weights = ckpt.state_dict_tensors(net)
        if self.dist.is_main:
            meta = weights_metadata(self.cfg, pos, net, self.spec, valid_acc=f"{valid.accuracy:.6f}")
            ckpt.save_weights(self.run_dir / ckpt.BEST, net, meta)
        return True

    def _log_epoch(self, epoch: Epoch, train: Meter, valid: Meter, improved: bool, epoch_seconds: float) -> None:
        pos = self.pos
        lr = self.optimizer.param_groups[0]["lr"]
        ips = epoch.images / max(epoch.train_seconds, 1e-9)
        if self.csv_log is not None:
            self.csv_log.append(
                {
                    "epoch": epoch.index + 1,
                    "step": pos.step,
                    "train_loss": train.loss,
                    "train_acc": train.accuracy,
                    "valid_loss": valid.loss,
                    "valid_acc": valid.accuracy,
                    "lr": lr,
                    "epoch_seconds": epoch_seconds,
                    "images_per_s": ips,
                    "best_valid_acc": pos.best_acc,
                }
            )
        self.tb.scalars(
            {
                "loss/train": train.loss,
                "loss/valid": valid.loss,
                "accuracy/train": train.accuracy,
                "accuracy/valid": valid.accuracy,
                "lr": lr,
                "throughput/images_per_s": ips,
            },
            pos.step,
        )
        self.progress.log(
            f"epoch {epoch.index + 1}/{self.cfg.epochs} step {pos.step} | train loss {train.loss:.4f} "
            f"acc {100 * train.accuracy:.2f}% | valid loss {valid.loss:.4f} acc {100 * valid.accuracy:.2f}%"
            f"{' (best)' if improved else ''} | lr {lr:.3g} | {epoch_seconds:.1f} s, {ips:.3g} img/s"
        )

    # ------------------------------------------------------------------ test and report
    def test(self) -> Meter:
        """Evaluate the test split once, with the best-on-validation weights (in memory, else
        ``best.safetensors``); the meter summed over processes."""
        best_path = self.run_dir / ckpt.BEST
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        elif best_path.is_file():
            ckpt.load_weights(best_path, self.model, self.cfg)
        meter, _ = evaluate(
            self.model, self.eval_batches("test"), prepare=self.prepare, precision=self.precision, device=self.device
        )
        return meter.reduced(self.device, self.dist)

    def check_rotations(self) -> dict[str, Any]:
        """Test accuracy per input rotation (every ``rotation_step`` degrees) and ``rotation.png``;
        empty when ``rotation_step`` is 0."""
        cfg = self.cfg
        angles = R.rotation_angles(cfg.rotation_step)
        if not angles:
            return {}
        imgs, labels = take(self.datasets["test"], self.tensors["test"], cfg.rotation_subset)
        accs = R.rotation_curve(
            self.model,
            imgs,
            labels,
            angles,
            rotate=self.hooks.rotate_fn,
            prepare=self.prepare,
            batch_size=self.eval_batch_size,
            device=self.device,
        )
        with self._writing(R.ROTATION_FILE):
            R.plot_rotation(self.run_dir / R.ROTATION_FILE, angles, accs, R.rotation_title(cfg, len(imgs)))
        return R.summarize_rotation(angles, accs, len(imgs))

    def check_invariance(self) -> dict[str, Any]:
        """Logit changes under the group's exact transformations of test images
        (:func:`~gsa.train.reporting.invariance_transforms`); empty when ``invariance_subset`` is 0."""
        if self.cfg.invariance_subset <= 0:
            return {}
        imgs, _ = take(self.datasets["test"], self.tensors["test"], self.cfg.invariance_subset)
        return R.invariance_check(
            self.model,
            imgs,
            prepare=self.prepare,
            batch_size=self.eval_batch_size,
            device=self.device,
            group=self.cfg.group,
        )

    def final_report(self, test: Meter, stopped: str) -> dict[str, Any]:
        """Rank 0: rotation and invariance checks, ``report.json`` and the summary lines; the report.

        ``test`` is the result of :meth:`test`, ``stopped`` that of :meth:`fit`.
        """
        rotation = self.check_rotations()
        invariance = self.check_invariance()
        position = dataclasses.asdict(self.pos)
        report = R.build_report(
            R.summarize_test(test),
            R.summarize_progress(position, self.steps_per_epoch, stopped),
            R.summarize_timing(position, self.steps_per_epoch),
            R.summarize_environment(self.device, self.dist.world_size, self.cfg.precision),
            R.summarize_run(self.cfg, self.n_params, self.eval_limit),
            {"rotation": rotation, "invariance": invariance},
        )
        with self._writing(R.REPORT_FILE):
            R.write_report(self.run_dir, report)
        for line in R.report_lines(report):
            self.progress.log(line)
        self.progress.log(f"report: {self.run_dir / R.REPORT_FILE}")
        return report
