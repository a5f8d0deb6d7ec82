"""``gsa info``: model summary, parameter count and a FLOPs estimate."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from torch import nn

from .config import TrainConfig
from .hooks import DataSpec, Hooks, check_image_size, get_hooks
from .reporting import jsonable


def count_flops(model: nn.Module, example: torch.Tensor) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward pass, counted with :class:`torch.utils.flop_counter.FlopCounterMode`.

    Counts matrix multiplications and convolutions (2 FLOPs per multiply-add); element-wise
    ops, softmax and normalisation are not counted. Returns (total, per top-level child).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    total = int(counter.get_total_flops())
    per_child: dict[str, int] = {}
    counts = counter.get_flop_counts()
    root = type(model).__name__
    for name, _ in model.named_children():
        key = f"{root}.{name}"
        if key in counts:
            per_child[name] = int(sum(counts[key].values()))
    return total, per_child


def model_info(
    cfg: TrainConfig,
    *,
    hooks: Optional[Hooks] = None,
    image_size: Optional[tuple[int, int]] = None,
    flops: bool = True,
) -> dict[str, Any]:
    """Build ``cfg``'s model on CPU and describe it (params, FLOPs for one image, layers)."""
    hooks = hooks or get_hooks()
    spec: DataSpec = hooks.info_fn(cfg.dataset)
    torch.manual_seed(cfg.seed)
    model = hooks.model_fn(cfg, spec)
    h, w = image_size or spec.image_size
    check_image_size(model, (h, w), "--image-size gives" if image_size else f"dataset {spec.name!r} has")
    example = torch.zeros(1, spec.in_channels, h, w)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layers = []
    for name, child in model.named_children():
        layers.append(
            {"name": name, "type": type(child).__name__, "params": sum(p.numel() for p in child.parameters())}
        )
    info: dict[str, Any] = {
        "model": type(model).__name__,
        "preset": cfg.preset,
        "group": cfg.group,
        "patch_size": cfg.patch_size,
        "dataset": cfg.dataset,
        "input_shape": list(example.shape),
        "num_classes": spec.num_classes,
        "params": params,
        "trainable_params": trainable,
        "layers": layers,
    }
    config = getattr(model, "config", None)
    if config is not None and dataclasses.is_dataclass(config):
        info["config"] = jsonable(dataclasses.asdict(config))
    if flops:
        total, per_child = count_flops(model, example)
        info["flops"] = total
        for layer in layers:
            layer["flops"] = per_child.get(layer["name"], 0)
        with torch.no_grad():
            info["output_shape"] = list(model.eval()(example).shape)
    return info


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_info(info: dict[str, Any]) -> str:
    patch = "global" if info["patch_size"] is None else f"{info['patch_size']}x{info['patch_size']}"
    lines = [
        f"model {info['model']} (preset {info['preset']}, group {info['group']}, attention {patch})",
        f"input {tuple(info['input_shape'])} from dataset {info['dataset']} -> {info['num_classes']} classes",
        f"parameters {info['params']:,} ({info['trainable_params']:,} trainable)",
    ]
    if "flops" in info:
        lines.append(
            f"FLOPs per image {human(info['flops'])} ({info['flops']:,}; matmul/conv only, "
            "counted with torch.utils.flop_counter)"
        )
    if info["layers"]:
        width = max(len(layer["name"]) for layer in info["layers"])
        lines.append("")
        lines.append(f"{'layer':<{width}}  {'type':<28} {'params':>10} {'FLOPs':>10}")
        for layer in info["layers"]:
            fl = human(layer["flops"]) if "flops" in layer else "-"
            lines.append(f"{layer['name']:<{width}}  {layer['type']:<28} {layer['params']:>10,} {fl:>10}")
    if "config" in info:
        lines.append("")
        lines.append("config: " + ", ".join(f"{k}={v}" for k, v in info["config"].items()))
    return "\n".join(lines)
