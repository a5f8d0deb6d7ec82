"""``python -m benchmarks.learning``: how fast and how well networks learn on rotmnist-mini.

Each *model* (a GSA-Net variant or a CNN baseline, :data:`MODELS`) is trained for a fixed budget
of images, for each seed, with one optimisation setup (Adam as ``gsa train`` builds it, linear
warm-up, cosine decay to zero over the budget; with ``--ema`` the moving average of the weights is
what is evaluated). Along the way the validation accuracy is measured every ``--eval-every``
images, together with the wall time spent training; at the end the test accuracy. Results print
as a table (mean ± std over seeds) and are written as JSON and a PNG (accuracy against images
seen and against wall time) to ``--out`` (default ``benchmarks/results/``).

Data: the embedded ``rotmnist-mini`` (7,000 / 1,000 / 2,000 randomly rotated digits), or with
``--data upright`` the same digits rotated back upright (trained and validated upright, tested
on the rotated test split: what a network learns about rotations it never saw).

Runs are independent processes (``--jobs``), each with ``--threads`` threads; timings are only
comparable within one machine and one ``--jobs``/``--threads`` setting, recorded in the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Optional

from .machine import portable

ROOT = Path(__file__).resolve().parent


def _mini_recipe():
    from gsa.train.config import get_recipe

    return get_recipe("mini")


#: The GSA-Net of the main command (``gsa train``, recipe ``mini``): same blocks, width, heads, window.
MINI_GSA = {
    **_mini_recipe().model_args,
    "patch_size": _mini_recipe().patch_size,
    "attention_dropout": 0.0,
    "value_dropout": 0.0,
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of the benchmark: how to build the network."""

    kind: str  # "gsa" or "cnn"
    group: str
    args: dict = dataclasses.field(default_factory=dict)
    description: str = ""


def _original(**kw) -> dict:
    from gsa.models import ORIGINAL_STYLE

    return {**MINI_GSA, **ORIGINAL_STYLE, "norm": "layer", **kw}


#: The models the benchmark knows; ``--models`` picks a comma-separated subset.
MODELS: dict[str, ModelSpec] = {
    "gsa-p4": ModelSpec("gsa", "p4", dict(MINI_GSA), "the main command's GSA-Net (recipe mini), defaults"),
    "gsa-z2": ModelSpec("gsa", "z2", dict(MINI_GSA), "same GSA-Net on the trivial group"),
    "gsa-p4m": ModelSpec("gsa", "p4m", dict(MINI_GSA), "same GSA-Net on rotations and mirrors"),
    "gsa-p4-original": ModelSpec(
        "gsa", "p4", _original(), "gsa-p4 with the original code's read-out, init and layer norm"
    ),
    "gsa-p4-layernorm": ModelSpec(
        "gsa",
        "p4",
        {**MINI_GSA, "norm": "layer"},
        "gsa-p4 with the paper's layer norm (the mini recipe before batch norm)",
    ),
    "gsa-p4-sum": ModelSpec("gsa", "p4", {**MINI_GSA, "readout": "sum"}, "gsa-p4 with the sum read-out"),
    "gsa-p4-zerobias": ModelSpec(
        "gsa", "p4", {**MINI_GSA, "coordinate_init": "zero"}, "gsa-p4 with zero positional-MLP biases"
    ),
    "gsa-p4-whiteninghead": ModelSpec(
        "gsa", "p4", {**MINI_GSA, "head_init": "whitening"}, "gsa-p4 with a whitened (not zero) classifier"
    ),
    **{
        f"gsa-p4-pos-{pos}": ModelSpec(
            "gsa", "p4", {**MINI_GSA, "positional": pos}, f"gsa-p4 with the {pos!r} positional encoding"
        )
        for pos in ("joint", "fourier", "fourier-fixed", "gevit")
    },
    "cnn": ModelSpec("cnn", "z2", {"channels": 24}, "plain CNN, 5 conv layers 3x3, 24 ch"),
    "gcnn-p4": ModelSpec("cnn", "p4", {"channels": 12}, "p4 G-CNN (Cohen & Welling), 5 layers 3x3, 12 ch"),
}


@dataclasses.dataclass
class Setup:
    """Optimisation and measurement settings shared by every run of one benchmark."""

    images: int = 3500
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the steps
    eval_every: int = 700
    valid_subset: int = 500
    test_subset: int = 2000
    data: str = "rotated"
    threads: int = 1
    ema: Optional[float] = None  # decay of the weights' moving average (gsa train --ema), evaluated instead
    overrides: dict = dataclasses.field(default_factory=dict)


def build(name: str, spec: ModelSpec, overrides: dict):
    """The network of ``spec``; ``overrides`` apply to GSA-Nets only."""
    import gsa

    if spec.kind == "gsa":
        args = {"patch_size": 5, **spec.args, **overrides}  # MINI_GSA's window unless overridden
        return gsa.models.create("rotmnist", group=spec.group, **args)
    from .baselines import GroupCNN

    return GroupCNN(spec.group, **spec.args)


def _data(kind: str, split: str):
    """``(x, y)``: float images ``(N, 1, 28, 28)`` in [0, 1] and labels."""
    import torch

    if kind == "upright" and split != "test":
        from gsa.viz import upright_digits

        return upright_digits(split)
    from gsa.data.rotmnist import mini_arrays

    a = mini_arrays()
    x = torch.from_numpy(a[f"{split}_x"]).float()[:, None] / 255.0
    return x, torch.from_numpy(a[f"{split}_y"]).long()


def _accuracy(model, x, y, batch: int = 250) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F

    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(x[i : i + batch])
            correct += int((out.argmax(1) == y[i : i + batch]).sum())
            loss += float(F.cross_entropy(out, y[i : i + batch], reduction="sum"))
    model.train()
    return correct / len(x), loss / len(x)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total`` (the trainer's schedule)."""
    from gsa.train.schedule import LRSchedule

    return LRSchedule("cosine", total, warmup)(step)


def _optimizer(model, setup: Setup):
    """Adam with coupled weight decay as ``gsa train`` builds it (PyTorch's fused update where it can run)."""
    from gsa.train.config import TrainConfig
    from gsa.train.optim import build_optimizer

    return build_optimizer(TrainConfig(optimizer="adam", lr=setup.lr, weight_decay=setup.weight_decay), model)


def run_one(name: str, seed: int, setup: Setup) -> dict[str, Any]:
    """Train model ``name`` with ``seed``; return its curve and final accuracies."""
    import torch
    import torch.nn.functional as F

    from gsa.train.ema import make_ema

    torch.set_num_threads(setup.threads)
    torch.manual_seed(seed)
    spec = MODELS[name]
    model = build(name, spec, setup.overrides)
    xtr, ytr = _data(setup.data, "train")
    xva, yva = _data(setup.data, "valid")
    xte, yte = _data("rotated", "test")
    mean, std = float(xtr.mean()), float(xtr.std())
    norm = lambda t: (t - mean) / std  # noqa: E731
    xtr, xva, xte = norm(xtr), norm(xva[: setup.valid_subset]), norm(xte[: setup.test_subset])
    yva, yte = yva[: setup.valid_subset], yte[: setup.test_subset]
    steps = max(1, setup.images // setup.batch_size)
    warm = max(1, int(setup.warmup * steps))
    opt = _optimizer(model, setup)
    ema = make_ema(model, setup.ema) if setup.ema is not None else None
    judged = ema.module if ema is not None else model  # what validation and the test evaluate
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warm))
    gen = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    curve, losses, seconds, first_loss = [], [], 0.0, None
    next_eval = setup.eval_every
    for step in range(steps):
        if len(order) < setup.batch_size:
            order = torch.cat([order, torch.randperm(len(xtr), generator=gen)])
        idx, order = order[: setup.batch_size], order[setup.batch_size :]
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        seconds += time.perf_counter() - t0
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{name} seed {seed}: loss {value} at step {step}")
        first_loss = value if first_loss is None else first_loss
        losses.append(value)
        images = (step + 1) * setup.batch_size
        if images >= next_eval or step == steps - 1:
            acc, vloss = _accuracy(judged, xva, yva)
            curve.append(
                {
                    "images": images,
                    "seconds": round(seconds, 2),
                    "train_loss": sum(losses) / len(losses),
                    "valid_acc": acc,
                    "valid_loss": vloss,
                }
            )
            print(
                f"    {name} seed {seed}: {images:,} images, {seconds:.0f} s, train loss "
                f"{curve[-1]['train_loss']:.3f}, valid {acc * 100:.1f} %",
                flush=True,
            )
            losses = []
            next_eval += setup.eval_every
    test_acc, test_loss = _accuracy(judged, xte, yte)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "model": name,
        "seed": seed,
        "params": params,
        "loss_step0": first_loss,
        "curve": curve,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "train_seconds": round(seconds, 2),
        "images_per_second": round(steps * setup.batch_size / seconds, 2),
    }


def _die_with_parent() -> None:
    """Pool initializer: on Linux, end this worker when the benchmark process ends (Ctrl-C, kill)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:  # pragma: no cover - unusual libc
            pass


def machine() -> dict[str, Any]:
    """CPU model, cores, threads, load, versions, git commit and kernels (as ``python -m benchmarks``)."""
    from .__main__ import environment

    env = environment(["cpu"])
    env.pop("command", None)
    return env


def summarize(results: list[dict]) -> list[dict]:
    """Mean and spread over seeds, per model."""
    rows = []
    for name in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == name]

        def stats(values):
            m = sum(values) / len(values)
            s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            return m, s

        rows.append(
            {
                "model": name,
                "seeds": len(rs),
                "params": rs[0]["params"],
                "loss_step0": stats([r["loss_step0"] for r in rs]),
                "final_train_loss": stats([r["curve"][-1]["train_loss"] for r in rs]),
                "valid_acc": stats([r["curve"][-1]["valid_acc"] for r in rs]),
                "test_acc": stats([r["test_acc"] for r in rs]),
                "images_per_second": stats([r["images_per_second"] for r in rs]),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'model':<22} {'params':>7} {'seeds':>5} {'loss@0':>8} {'loss end':>9} {'valid %':>12} {'test %':>12} {'img/s':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        pm = lambda ms, scale=100.0: f"{ms[0] * scale:5.1f} ± {ms[1] * scale:4.1f}"  # noqa: E731
        lines.append(
            f"{r['model']:<22} {r['params']:>7,} {r['seeds']:>5} {r['loss_step0'][0]:>8.2f} "
            f"{r['final_train_loss'][0]:>9.3f} {pm(r['valid_acc']):>12} {pm(r['test_acc']):>12} "
            f"{r['images_per_second'][0]:>7.1f}"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str) -> Path:
    """Validation accuracy against images seen and against training seconds (mean, min–max band)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), constrained_layout=True)  # its own canvas: the backend is left alone
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for name in dict.fromkeys(r["model"] for r in results):
        curves = [r["curve"] for r in results if r["model"] == name]
        n = min(len(c) for c in curves)
        for ax, key in zip(axes, ("images", "seconds")):
            xs = [sum(c[i][key] for c in curves) / len(curves) for i in range(n)]
            accs = [[c[i]["valid_acc"] * 100 for c in curves] for i in range(n)]
            mean = [sum(a) / len(a) for a in accs]
            (line,) = ax.plot(xs, mean, marker="o", ms=3, label=f"{name} ({len(curves)} seeds)")
            if len(curves) > 1:
                ax.fill_between(xs, [min(a) for a in accs], [max(a) for a in accs], color=line.get_color(), alpha=0.15)
    for ax, label in zip(axes, ("training images seen", "training wall time (s)")):
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.axhline(10, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.learning", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="gsa-p4,gsa-z2,cnn,gcnn-p4", help=f"comma-separated, from: {', '.join(MODELS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--images", type=int, default=3500, help="training images per run (default 3500: half an epoch)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.05, help="warm-up fraction of the steps (default 0.05)")
    p.add_argument("--eval-every", type=int, default=700, help="validation every N images (default 700)")
    p.add_argument("--valid-subset", type=int, default=500, help="validation images (default 500)")
    p.add_argument("--test-subset", type=int, default=2000, help="test images (default: all 2000)")
    p.add_argument("--data", choices=("rotated", "upright"), default="rotated")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="GSANetConfig override for the GSA models (repeatable; JSON values)",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=None,
        metavar="DECAY",
        help="validate and test a moving average of the weights, as gsa train --ema (default: none)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="threads per run (default: cores // jobs)")
    p.add_argument("--quick", action="store_true", help="tiny budget, for tests")
    p.add_argument("--out", type=Path, default=ROOT / "results", help="folder for the JSON and PNG")
    p.add_argument("--tag", default="learning", help="file name stem (default 'learning')")
    args = p.parse_args(argv)
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(MODELS)}")
    if args.ema is not None and not 0.0 < args.ema < 1.0:
        p.error(f"--ema must be in (0, 1), got {args.ema:g}")
    if args.quick:
        args.images, args.eval_every, args.valid_subset, args.test_subset = 64, 32, 50, 50
        args.seeds = args.seeds if "--seeds" in (argv or sys.argv) else "0"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = args.models.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    setup = Setup(
        images=args.images,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        eval_every=args.eval_every,
        valid_subset=args.valid_subset,
        test_subset=args.test_subset,
        data=args.data,
        threads=threads,
        ema=args.ema,
        overrides=_parse_overrides(args.set),
    )
    jobs = [(m, s) for s in seeds for m in models]
    print(
        f"learning benchmark: {len(jobs)} runs ({', '.join(models)} x seeds {seeds}), {args.images:,} images "
        f"each, {args.jobs} at a time with {threads} thread(s)",
        flush=True,
    )
    results = []
    started = time.time()

    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"{args.tag}.runs.jsonl"  # one line per finished run, as they finish
    partial.write_text("")

    def done(r: dict) -> None:
        results.append(r)
        with partial.open("a") as fh:
            fh.write(json.dumps(r) + "\n")
        print(
            f"  {r['model']:<22} seed {r['seed']}: test {r['test_acc'] * 100:5.1f} %  valid "
            f"{r['curve'][-1]['valid_acc'] * 100:5.1f} %  loss@0 {r['loss_step0']:.2f}  "
            f"{r['images_per_second']:.1f} img/s  ({len(results)}/{len(jobs)}, {time.time() - started:.0f} s)",
            flush=True,
        )

    if args.jobs > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_die_with_parent) as pool:
            futures = [pool.submit(run_one, m, s, setup) for m, s in jobs]
            for f in as_completed(futures):
                done(f.result())
    else:
        for m, s in jobs:
            done(run_one(m, s, setup))
    rows = summarize(results)
    print(format_table(rows))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    report = {
        "benchmark": "learning",
        "command": portable("python -m benchmarks.learning " + " ".join(argv or sys.argv[1:])),
        "date": stamp,
        "machine": machine(),
        "setup": dataclasses.asdict(setup),
        "jobs": args.jobs,
        "models": {m: dataclasses.asdict(MODELS[m]) for m in models},
        "summary": rows,
        "runs": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{args.tag}.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    title = (
        f"rotmnist-mini ({args.data} training digits), {args.images:,} images, batch {args.batch_size}, "
        f"Adam {args.lr:g} warm-up+cosine{f', EMA {args.ema:g}' if args.ema else ''}; {report['machine']['cpu']}, {args.jobs} run(s) at a time, "
        f"{threads} thread(s) each"
    )
    png = plot(results, args.out / f"{args.tag}.png", title)
    partial.unlink(missing_ok=True)  # the JSON holds every run now
    print(f"wrote {json_path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
