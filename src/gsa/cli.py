"""The ``gsa`` command line: ``gsa train``, ``gsa eval``, ``gsa export``, ``gsa info``, ``gsa figures``.

Errors in the input, unreadable checkpoints and non-finite losses end with a one-line
``gsa: error: ...`` on stderr and a non-zero exit code (2: bad input, 1: checkpoint /
runtime failure, 3: NaN/Inf loss, 130: interrupted after saving). Set ``GSA_DEBUG=1``
to see tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

EXAMPLES = """examples:
  gsa train                                   # rotmnist-mini, recipe 'mini' (short CPU demo)
  gsa train --epochs 1 --max-steps 20 --out runs/smoke
  gsa train --recipe rotmnist --download --group p8
  gsa train --resume runs/smoke               # continue where it stopped
  gsa train --print-config > exp.json         # edit exp.json, then:
  gsa train --config exp.json --seed 1        # its settings; flags given beside it win
  torchrun --nproc_per_node 2 -m gsa train --recipe cifar10 --download
  gsa eval runs/smoke --rotations
  gsa export runs/smoke --format onnx         # runs/smoke/model.onnx, checked against the model
  gsa info --recipe pcam --group p4m
  gsa figures --quick --out figs-check        # regenerate the documentation figures (tiny)

environment:
  GSA_DATA_DIR   where datasets are looked up (default: data in the platform's cache folder,
                 ~/.cache/gsa/data on Linux, $XDG_CACHE_HOME/gsa/data if that is set)
  GSA_NATIVE=0   use the PyTorch attention kernels instead of the native CPU ones
  GSA_CACHE_DIR  where the native CPU kernels are built and cached (default ~/.cache/gsa/kernels on Linux;
                 must be private: owned by you, not writable by others)
  GSA_HOOKS=NAME model/dataset hooks, as --hooks NAME (an entry point of the 'gsa.hooks' group)
  GSA_OPENMP_DEFAULTS=0  keep OpenMP's spinning threads (gsa sets OMP_WAIT_POLICY=PASSIVE unless
                 OMP_WAIT_POLICY or GOMP_SPINCOUNT is set: steadier on a busy machine)
  GSA_DEBUG=1    show tracebacks of errors
"""


def _patch_size(text: str) -> Optional[int]:
    """``--patch-size``: an odd ``k``, or ``global`` (also ``0``) for global attention (``None`` below the CLI)."""
    if text.strip().lower() in {"global", "0"}:
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an odd integer or 'global', got {text!r}") from None
    if value < 0 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"expected an odd integer or 'global'/0, got {text!r}")
    return value


def _int_at_least(low: int, what: str):
    """An argparse ``type`` for integers ``>= low`` (``what`` names them in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _optional_float(text: str) -> Optional[float]:
    if text.strip().lower() in {"none", "off", "0"}:
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    import ast

    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a plain string
    return key.strip(), value


S = argparse.SUPPRESS  # flags not given on the command line stay absent -> recipe/saved values win


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from gsa.train.config import ACTIVATIONS, NORMS

    g = p.add_argument_group("model")
    g.add_argument("--preset", default=S, help="model preset of gsa.models (default: the recipe's)")
    g.add_argument(
        "--group",
        default=S,
        help="symmetry group: z2, p4, p8, p12, p16, mz2, p4m, p8m, or for any n >= 1 p{n} "
        "(n rotations; escnn's C{n}) and p{n}m (with mirrors; D{n}): p6, p6m, ...",
    )
    g.add_argument(
        "--patch-size",
        type=_patch_size,
        default=S,
        metavar="K",
        help="local attention window KxK (odd), or 0/'global' for global attention",
    )
    g.add_argument("--dropout", type=float, default=S, help="dropout (default: the preset's)")
    g.add_argument("--attention-dropout", type=float, default=S, help="attention/value dropout")
    g.add_argument("--norm", choices=NORMS, default=S, help="normalisation layers")
    g.add_argument("--activation", choices=ACTIVATIONS, default=S, help="activation function")
    g.add_argument(
        "--model-arg",
        dest="model_args",
        action="append",
        type=_key_value,
        default=S,
        metavar="KEY=VALUE",
        help="extra gsa.models.create() override, e.g. --model-arg num_heads=4 (repeatable)",
    )


def _add_hooks_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hooks",
        default=S,
        metavar="NAME",
        help="model/dataset hooks: an installed entry point of the 'gsa.hooks' group, or "
        "gsa.MODULE:ATTR (default: $GSA_HOOKS, else gsa's own models and datasets)",
    )


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S, help="dataset name (gsa.data.list_datasets()); default: the recipe's")
    g.add_argument("--data-dir", default=S, help="where datasets are stored / downloaded")
    g.add_argument("--download", action="store_true", default=S, help="download the dataset if missing")


def build_parser() -> argparse.ArgumentParser:
    """The ``gsa`` argument parser: one sub-command per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="gsa",
        description="Group equivariant stand-alone self-attention (GSA-Nets): train, evaluate, inspect.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"gsa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,export,info,figures}")
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_export_parser(sub)
    _add_info_parser(sub)
    _add_figures_parser(sub)
    return parser


def _add_train_parser(sub) -> None:
    """``gsa train``: recipe, data, model, optimisation, evaluation and runtime flags."""
    t = sub.add_parser(
        "train",
        help="train a GSA-Net (default: recipe 'mini' on rotmnist-mini)",
        description="Train a GSA-Net. Without arguments: --recipe mini --dataset rotmnist-mini. "
        "Every recipe field can be overridden with a flag; the effective configuration is saved as "
        "<out>/config.json.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--recipe", default=S, help="mini (default), rotmnist, cifar10, pcam (paper App. F)")
    t.add_argument("--list-recipes", action="store_true", help="print the recipes and exit")
    t.add_argument(
        "--config",
        metavar="FILE",
        default=S,
        help="start from FILE (what --print-config prints, a run's config.json, or a run directory; "
        "JSON, or YAML when it ends in .yaml/.yml and PyYAML is installed); flags given beside it "
        "override it, --recipe included (that recipe fills the fields FILE leaves out)",
    )
    t.add_argument("--print-config", action="store_true", help="print the effective config as JSON and exit")
    _add_hooks_arg(t)
    _add_data_args(t)
    _add_model_args(t)
    _add_optimisation_args(t.add_argument_group("optimisation"))
    _add_evaluation_args(t.add_argument_group("evaluation"))
    _add_runtime_args(t.add_argument_group("runtime"))


def _add_optimisation_args(g) -> None:
    """``gsa train``'s optimisation flags."""
    from gsa.train.config import OPTIMIZERS, PRECISIONS, SCHEDULERS

    g.add_argument("--epochs", type=_positive_int, default=S)
    g.add_argument("--batch-size", type=_positive_int, default=S, help="global batch (split over DDP processes)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S)
    g.add_argument("--lr", type=float, default=S, help="learning rate")
    g.add_argument("--momentum", type=float, default=S, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=S)
    g.add_argument(
        "--scheduler", choices=SCHEDULERS, default=S, help="per-step LR schedule; cosine decays to 0 over --epochs"
    )
    g.add_argument(
        "--warmup-epochs",
        type=float,
        default=S,
        metavar="E",
        help="linear LR warm-up over the first E epochs (may be fractional; default: the recipe's)",
    )
    g.add_argument(
        "--grad-clip",
        type=_optional_float,
        default=S,
        metavar="NORM",
        help="clip the gradient norm (after unscaling with fp16); 'none' disables",
    )
    g.add_argument(
        "--ema",
        type=_optional_float,
        default=S,
        metavar="DECAY",
        help="validate, keep and test a moving average of the weights with this decay per step (e.g. 0.999; "
        "ramped up early in training); 'none' or 0 disables (default: the recipe's)",
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=S,
        help="autocast dtype; fp16 uses a GradScaler; logits and loss stay fp32",
    )
    g.add_argument(
        "--max-steps",
        type=_non_negative_int,
        default=S,
        help="stop after this many optimizer steps (0: no cap; the LR schedule still follows --epochs)",
    )
    g.add_argument(
        "--train-subset",
        type=_positive_int,
        default=S,
        metavar="N",
        help="train on the first N training images only (default: all)",
    )
    g.add_argument("--seed", type=int, default=S)
    g.add_argument(
        "--deterministic", action="store_true", default=S, help="torch.use_deterministic_algorithms (warn only)"
    )


def _add_evaluation_args(g) -> None:
    """``gsa train``'s evaluation flags."""
    g.add_argument("--eval-batch-size", type=_positive_int, default=S, help="default: max(batch size, 100)")
    g.add_argument(
        "--eval-subset",
        type=_positive_int,
        default=S,
        metavar="N",
        help="evaluate valid/test on their first N images (default: all)",
    )
    g.add_argument(
        "--max-eval-batches",
        type=_positive_int,
        default=S,
        metavar="K",
        help="evaluate at most K eval batches per split (default: no cap)",
    )
    g.add_argument(
        "--rotation-step",
        type=float,
        default=S,
        metavar="DEG",
        help="angle step of the rotation curve rotation.png (default 15; 0 disables)",
    )
    g.add_argument(
        "--rotation-subset",
        type=_positive_int,
        default=S,
        metavar="N",
        help="test images used for the rotation curve (default 500)",
    )
    g.add_argument(
        "--invariance-subset",
        type=_non_negative_int,
        default=S,
        metavar="N",
        help="test images for the invariance check (the group's exact elements; default 32; 0 disables)",
    )


def _add_runtime_args(g) -> None:
    """``gsa train``'s runtime flags."""
    from gsa.train.config import INPUT_STATS, LOADERS, PROGRESS_MODES

    g.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:N, mps")
    g.add_argument("--workers", type=_non_negative_int, default=S, help="DataLoader worker processes")
    g.add_argument(
        "--loader",
        choices=LOADERS,
        default=S,
        help="auto: small in-memory datasets are indexed as tensors, others use a DataLoader",
    )
    g.add_argument("--out", default=S, help="run directory (default: runs/<recipe>-<dataset>-<group>-<time>)")
    g.add_argument(
        "--resume",
        metavar="DIR",
        default=S,
        help="continue the run in DIR from last.state.pt (flags given override its config)",
    )
    g.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default=S,
        help="auto: tqdm bars on a terminal, plain log lines otherwise or when CI=true",
    )
    g.add_argument(
        "--log-every",
        type=_non_negative_int,
        default=S,
        metavar="N",
        help="plain mode: a line every N steps (default: ~10 per epoch)",
    )
    g.add_argument(
        "--no-tensorboard", dest="tensorboard", action="store_false", default=S, help="do not write TensorBoard events"
    )
    g.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        default=S,
        help="feed [0, 1] images without per-channel normalisation",
    )
    g.add_argument(
        "--input-stats",
        choices=INPUT_STATS,
        default=S,
        help="normalise with the dataset's statistics (default) or the original code's fixed ones "
        "(rotmnist: MNIST's 0.1307/0.3081; cifar10, pcam)",
    )


def _add_eval_parser(sub) -> None:
    """``gsa eval``."""
    from gsa.train.config import PRECISIONS

    e = sub.add_parser(
        "eval",
        help="evaluate a run's best checkpoint on the test split",
        description="Evaluate a run directory (its best.safetensors) or a checkpoint file. By default the run's "
        "own evaluation settings are used, so the accuracy equals the one in report.json.",
    )
    e.add_argument("path", help="run directory or .safetensors file (config.json must be next to it)")
    e.add_argument("--split", choices=("test", "valid", "train"), default="test")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which weights of a run directory")
    e.add_argument("--eval-subset", type=_positive_int, default=None, metavar="N")
    e.add_argument("--max-eval-batches", type=_positive_int, default=None, metavar="K")
    e.add_argument("--full", action="store_true", help="ignore the run's eval subset/batch caps; use the whole split")
    e.add_argument("--batch-size", type=_positive_int, default=None, help="eval batch size (default: the run's)")
    e.add_argument("--device", default=None)
    e.add_argument("--precision", choices=PRECISIONS, default=None)
    e.add_argument("--data-dir", default=None)
    e.add_argument(
        "--rotations", action="store_true", help="also print accuracy per rotation angle and the invariance check"
    )
    e.add_argument("--rotation-step", type=float, default=None, metavar="DEG")
    e.add_argument("--rotation-subset", type=_positive_int, default=None, metavar="N")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_hooks_arg(e)


def _add_export_parser(sub) -> None:
    """``gsa export``."""
    from gsa.export import FORMATS

    x = sub.add_parser(
        "export",
        help="export a run's model to ONNX, torch.export (pt2) or TorchScript",
        description="Write a run's model (best weights) to a file and check its outputs against the PyTorch "
        "model on random inputs. The attention layers are exported with the dense 'reference' backend; "
        "the batch dimension is dynamic; inputs are normalised images, as for the model.",
    )
    x.add_argument("run", help="run directory or .safetensors file (config.json must be next to it)")
    x.add_argument("--format", required=True, choices=tuple(FORMATS), help="file format")
    x.add_argument("--out", default=None, metavar="FILE", help="output file (default: RUN/model.<suffix>)")
    x.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which weights of a run directory")
    x.add_argument(
        "--batch-size",
        type=_int_at_least(2, "an integer >= 2"),
        default=2,
        metavar="N",
        help="batch of the example input traced and checked (default 2; the file accepts any batch)",
    )
    _add_hooks_arg(x)


def _add_info_parser(sub) -> None:
    """``gsa info``."""
    i = sub.add_parser(
        "info",
        help="model summary, parameter count, FLOPs estimate",
        description="Describe a model: layers, parameters, FLOPs of one forward pass on one image "
        "(torch.utils.flop_counter.FlopCounterMode; matmul/conv only).",
    )
    i.add_argument("run", nargs="?", help="optional run directory: describe its model")
    i.add_argument("--recipe", default=S, help="start from this recipe's model/dataset (default mini)")
    _add_data_args(i)
    _add_model_args(i)
    i.add_argument(
        "--image-size", type=_positive_int, default=None, metavar="N", help="square input size (default: the dataset's)"
    )
    i.add_argument("--no-flops", action="store_true", help="skip the FLOPs count")
    i.add_argument("--json", action="store_true", help="print as JSON")
    _add_hooks_arg(i)


def _add_figures_parser(sub) -> None:
    """``gsa figures`` (options from :mod:`gsa.viz`)."""
    from gsa.viz import add_arguments as _add_figure_arguments

    f = sub.add_parser(
        "figures",
        help="regenerate the documentation figures (docs/figures/*.png)",
        description=(
            "Regenerate lifting.png, steerability.png, rotation_accuracy.png and scale_accuracy.png "
            "(same as python -m gsa.viz)."
        ),
    )
    _add_figure_arguments(f)


# ---------------------------------------------------------------------- commands
_NOT_CONFIG = {"command", "recipe", "config", "resume", "list_recipes", "print_config", "hooks"}


def _overrides(args: argparse.Namespace, exclude: set[str] = frozenset()) -> dict[str, Any]:
    out = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG and k not in exclude}
    if "model_args" in out:
        out["model_args"] = dict(out["model_args"])
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from gsa.train import config as C
    from gsa.train.engine import train
    from gsa.train.resume import check_settings

    if args.list_recipes:
        for r in C.RECIPES.values():
            print(f"{r.name:<9} {r.description}")
        return 0
    overrides = _overrides(args)
    if overrides.get("max_steps") == 0:
        overrides["max_steps"] = None  # explicit "no cap" (e.g. when resuming a capped run)
    resume_dir = getattr(args, "resume", None)
    if resume_dir is not None:
        if hasattr(args, "recipe"):
            raise C.ConfigError("--recipe cannot be combined with --resume (the run keeps its recipe)")
        if hasattr(args, "config"):
            raise C.ConfigError(
                "--config cannot be combined with --resume (the run keeps its config.json; "
                "give changed settings as flags)"
            )
        if "out" in overrides and os.path.abspath(overrides["out"]) != os.path.abspath(resume_dir):
            raise C.ConfigError("--out and --resume name different directories; --resume continues in DIR")
        if not os.path.isdir(resume_dir):
            raise C.ConfigError(f"--resume {resume_dir}: no such run directory")
        saved = C.TrainConfig.load(resume_dir)
        cfg = C.TrainConfig.from_dict({**saved.to_dict(), **overrides, "out": resume_dir}).validate()
        changed = check_settings(saved, cfg)  # refused changes fail here, before any data is loaded
        if changed and not args.print_config and _is_main_rank():
            print(
                "resuming with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            )
    elif hasattr(args, "config"):
        cfg = C.config_from_file(args.config, getattr(args, "recipe", None), **overrides)
    else:
        cfg = C.make_config(getattr(args, "recipe", C.DEFAULT_RECIPE), **overrides)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    train(cfg, resume=resume_dir is not None)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from gsa.train.evaluate import evaluate_run, format_result

    result = evaluate_run(
        args.path,
        split=args.split,
        which=args.checkpoint,
        eval_subset=args.eval_subset,
        max_eval_batches=args.max_eval_batches,
        full=args.full,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        rotations=args.rotations or args.rotation_step is not None,
        rotation_step=args.rotation_step,
        rotation_subset=args.rotation_subset,
        data_dir=args.data_dir,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from gsa.errors import GsaError
    from gsa.export import FORMATS, export, max_abs_difference
    from gsa.train.evaluate import load_run_model
    from gsa.train.hooks import input_stats

    model, cfg, spec = load_run_model(args.run, args.checkpoint)
    run_dir = args.run if os.path.isdir(args.run) else os.path.dirname(args.run)
    out = args.out or os.path.join(run_dir, "model" + FORMATS[args.format])
    example = torch.randn(
        args.batch_size, spec.in_channels, *spec.image_size, generator=torch.Generator().manual_seed(0)
    )
    export(model, out, format=args.format, example=example)
    norm = "[0, 1] images"
    mean, std = input_stats(cfg, spec)
    if mean is not None and std is not None:
        norm = f"images normalised with mean {list(mean)} std {list(std)}"
    print(
        f"wrote {out} ({os.path.getsize(out)} bytes, {args.format}; input (B, {spec.in_channels}, "
        f"{spec.image_size[0]}, {spec.image_size[1]}): {norm})"
    )
    check = torch.randn(args.batch_size + 1, *example.shape[1:], generator=torch.Generator().manual_seed(1))
    try:
        diff = max_abs_difference(model, out, format=args.format, x=check)
    except GsaError as exc:  # e.g. onnxruntime missing: the file is written, the check is skipped
        print(f"not checked: {exc}")
        return 0
    print(f"checked on a random batch of {len(check)}: max |exported - model| = {diff:.3g}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from gsa.train import config as C
    from gsa.train.info import format_info, model_info

    overrides = _overrides(args, exclude={"run", "image_size", "no_flops", "json"})
    if args.run:
        if hasattr(args, "recipe"):
            raise C.ConfigError("give either a run directory or --recipe, not both")
        saved = C.TrainConfig.load(args.run)
        cfg = C.TrainConfig.from_dict({**saved.to_dict(), **overrides}).validate()
    else:
        cfg = C.make_config(getattr(args, "recipe", C.DEFAULT_RECIPE), **overrides)
    size = (args.image_size, args.image_size) if args.image_size else None
    info = model_info(cfg, image_size=size, flops=not args.no_flops)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from gsa.viz import run

    return run(args)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "info": cmd_info, "figures": cmd_figures}


def _install_hooks(args: argparse.Namespace) -> None:
    """``--hooks NAME`` (else ``GSA_HOOKS=NAME``) swaps the model/dataset factories: see
    :func:`gsa.train.hooks.load_hooks` (entry points of the ``gsa.hooks`` group, or gsa's own modules)."""
    name, source = getattr(args, "hooks", None), "--hooks"
    if name is None:
        name, source = os.environ.get("GSA_HOOKS", ""), "GSA_HOOKS"
    if not name.strip():
        return
    from gsa.train.hooks import load_hooks, set_hooks

    set_hooks(load_hooks(name, source=source))


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``gsa`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        from gsa.errors import GsaError, TrainingInterrupted, one_line
    except Exception:  # pragma: no cover - broken install
        raise
    debug = os.environ.get("GSA_DEBUG", "").strip().lower() in {"1", "true", "yes"}
    try:
        _install_hooks(args)
        return COMMANDS[args.command](args)
    except GsaError as exc:
        if debug:
            raise
        if _is_main_rank():
            kind = "" if isinstance(exc, TrainingInterrupted) else "error: "
            print(f"gsa: {kind}{one_line(exc)}", file=sys.stderr, flush=True)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `gsa train --print-config | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        if _is_main_rank():
            print("gsa: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
