"""Benchmark cases: what is measured, how big it is, and what it costs on paper.

A :class:`Case` is one workload (a lifting or group layer, or a preset model) at one batch size,
image size, group and neighbourhood, on one device and dtype, run by one implementation:

* ``fast``     — the library's fast CPU path (``backend="fast"``: the fused kernel for local attention,
  the chunked core with its native kernels for global attention);
* ``native``   — the chunked core with its native kernels (``backend="native"``, CPU), the default
  before the fused kernel;
* ``dense``    — the library's all-pairs oracle (``backend="dense"``, the ``"reference"`` backend);
* ``original`` — the original release's algorithm (:mod:`benchmarks.original`, registered as a backend:
  ``unfold``, full score tensor);
* ``flex``     — :func:`torch.nn.attention.flex_attention` (CUDA only);
* ``triton``   — the fused Triton kernels (``backend="triton"``, CUDA only; the ``[gpu]`` extra).

Shapes of every attention layer are found once per workload with a cheap batch-1 forward pass
(:func:`attention_shapes`); from them come the FLOP estimate (:func:`flops`) and the memory
estimates that let the runner skip implementations that would not fit (:func:`memory_estimate`).
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import torch

IMPLS = ("original", "fast", "native", "dense", "flex", "triton")
CUDA_ONLY = ("flex", "triton")  # implementations that run only on CUDA devices


@dataclasses.dataclass(frozen=True)
class Case:
    workload: str  # "lifting", "group", a preset name ("rotmnist", "cifar10", "pcam"), or "mini"
    group: str
    patch_size: int | None  # None: global
    batch: int
    size: int  # image side
    impl: str
    device: str = "cpu"
    dtype: str = "float32"  # "float32" or "bfloat16" (autocast on CUDA)
    channels: int = 20  # layers only
    heads: int = 9  # layers only
    attention_dropout: float = 0.1

    @property
    def is_model(self) -> bool:
        return self.workload not in ("lifting", "group")

    @property
    def nb(self) -> str:
        return "global" if self.patch_size is None else f"{self.patch_size}x{self.patch_size}"

    def workload_key(self) -> tuple:
        """Everything but the implementation: cases with the same key are compared."""
        d = dataclasses.asdict(self)
        d.pop("impl")
        return tuple(sorted(d.items()))

    def label(self) -> str:
        what = self.workload if self.is_model else f"{self.workload} layer"
        return f"{what} {self.group} {self.nb} {self.size}x{self.size} b{self.batch}"


def build(case: Case) -> torch.nn.Module:
    """The module of a case (on CPU, float32, train mode), with the case's implementation installed."""
    from gsa.models import create
    from gsa.nn import GroupSelfAttention, LiftingSelfAttention

    if case.workload == "lifting":
        m = LiftingSelfAttention(
            case.group,
            case.channels,
            case.channels,
            num_heads=case.heads,
            patch_size=case.patch_size,
            attention_dropout=case.attention_dropout,
        )
    elif case.workload == "group":
        m = GroupSelfAttention(
            case.group,
            case.channels,
            case.channels,
            num_heads=case.heads,
            patch_size=case.patch_size,
            attention_dropout=case.attention_dropout,
        )
    elif case.workload == "mini":  # the main command's network (recipe mini, as in benchmarks.learning)
        from .learning import MINI_GSA

        m = create("rotmnist", group=case.group, **{**MINI_GSA, "patch_size": case.patch_size})
    else:
        m = create(case.workload, group=case.group, patch_size=case.patch_size)
    if case.impl == "original":
        importlib.import_module(".original", __package__)  # registers the "original" backend
    for mod in m.modules():
        if isinstance(mod, (LiftingSelfAttention, GroupSelfAttention)):
            mod.backend = case.impl
            if case.impl == "flex":  # flex_attention has no attention dropout
                mod.attention_dropout.p = 0.0
    return m


def example_input(case: Case, module: torch.nn.Module, batch: int | None = None) -> torch.Tensor:
    b = case.batch if batch is None else batch
    if case.workload == "lifting":
        return torch.randn(b, module.in_channels, case.size, case.size)
    if case.workload == "group":
        return torch.randn(b, module.in_channels, module.group.order, case.size, case.size)
    return torch.randn(b, module.config.in_channels, case.size, case.size)


@dataclasses.dataclass
class LayerShape:
    lifting: bool
    X: int
    Y: int
    Gq: int
    Gk: int
    H: int
    heads: int
    d: int
    c_in: int
    c_out: int
    p: int  # positional channels
    g: int  # group-embedding channels
    K: int  # key slots per query pixel
    classes: int = 1  # conjugation classes of the relative-element tables (1 for lifting layers)


def attention_shapes(case: Case) -> tuple[list[LayerShape], int, float]:
    """Per-attention-layer shapes at batch 1, the parameter count, and the non-attention FLOPs
    (1×1 convolutions and linear layers outside the attention layers) per sample."""
    from gsa.nn import GroupSelfAttention, LiftingSelfAttention

    layers = (LiftingSelfAttention, GroupSelfAttention)
    m = build(dataclasses.replace(case, impl="fast"))
    m.eval()
    shapes: list[LayerShape] = []
    other = [0.0]
    hooks = []

    def att_hook(mod, args):
        x = args[0]
        X, Y = x.shape[-2], x.shape[-1]
        G = 1 if mod.lifting else mod.group.order
        K = X * Y if mod.patch_size is None else mod.patch_size**2
        shapes.append(
            LayerShape(
                mod.lifting,
                X,
                Y,
                G,
                G,
                mod.group.order,
                mod.num_heads,
                mod.mid_channels,
                mod.in_channels,
                mod.out_channels,
                mod.row_dim + mod.col_dim,
                mod.grp_dim,
                K,
                1 if mod.lifting else int(mod._classes[1].numel()),
            )
        )

    def lin_hook(mod, args, out):
        if isinstance(mod, torch.nn.Linear):
            other[0] += 2.0 * out.numel() * mod.in_features
        else:
            other[0] += 2.0 * out.numel() * (mod.weight[0].numel())

    att_modules = [mod for mod in m.modules() if isinstance(mod, layers)]
    inside = {id(p) for a in att_modules for p in a.modules()}
    for mod in m.modules():
        if isinstance(mod, layers):
            hooks.append(mod.register_forward_pre_hook(att_hook))
        elif isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)) and id(mod) not in inside:
            hooks.append(mod.register_forward_hook(lin_hook))
    with torch.no_grad():
        m(example_input(case, m, batch=1))
    for h in hooks:
        h.remove()
    params = sum(p.numel() for p in m.parameters())
    return shapes, params, other[0]


def layer_flops(s: LayerShape) -> float:
    """FLOPs of one attention layer's forward pass at batch 1, counted for the direct algorithm
    (the paper's formula): projections, content/positional/group scores, softmax (~5 per score) and
    the weighted sum over all ``|H|·Gq·Gk·K`` probabilities per query pixel and head."""
    N, n = s.X * s.Y, s.heads
    proj = 2.0 * N * s.Gq * s.c_in * 3 * n * s.d + 2.0 * N * s.H * n * s.d * s.c_out
    content = 2.0 * s.Gq * s.Gk * s.K * s.d
    positional = 2.0 * s.Gq * s.H * s.K * s.p
    group = 2.0 * s.Gq * s.H * s.Gk * s.g
    probs = s.H * s.Gq * s.Gk * s.K
    return proj + n * N * (content + positional + group + probs * (5.0 + 2.0 * s.d))


def useful_layer_flops(s: LayerShape) -> float:
    """FLOPs of one attention layer's forward pass at batch 1 that the two-level algorithm of
    :mod:`gsa.nn.fastcore` cannot avoid: the projections; the content scores ``C = q·k`` once per
    ``(a_q, a_k, slot)`` (shared by every output element ``h``); the positional scores ``q_pos·ρ_h``
    once per ``(a_q, h, slot)``; the group scores once per ``(a_q, h)``; the inner softmax over ``a_k``
    per conjugation class (``U`` of them: 1 for rotation groups, ``|H|/2`` for roto-reflections) and
    the slot softmax per ``(a_q, h)`` (~5 FLOPs per score each); the weights ``W = Σ_{a_q} Pn·E``;
    and the value sum ``Σ W·v`` per output element. Recomputation, copies and padding are not counted:
    this is the work a perfect implementation of the same algorithm would do."""
    N, n = s.X * s.Y, s.heads
    U = s.classes
    proj = 2.0 * N * s.Gq * s.c_in * 3 * n * s.d + 2.0 * N * s.H * n * s.d * s.c_out
    content = 2.0 * s.Gq * s.Gk * s.K * s.d
    positional = 2.0 * s.Gq * s.H * s.K * s.p
    group = 2.0 * s.Gq * s.H * s.g
    two_level = s.Gk > 1  # lifting layers have one key element: one softmax level, W = Pn
    inner = 6.0 * s.Gq * U * s.Gk * s.K if two_level else 0.0  # T = C + Gt, softmax over a_k
    outer = (6.0 if two_level else 5.0) * s.Gq * s.H * s.K  # L = P + lse, softmax over slots
    weights = 2.0 * s.Gq * s.H * s.Gk * s.K if two_level else 0.0
    values = 2.0 * s.H * s.Gk * s.K * s.d
    return proj + n * N * (content + positional + group + inner + outer + weights + values)


def flops(case: Case, shapes: list[LayerShape], other: float) -> tuple[float, float]:
    """(forward, forward+backward) FLOP estimates of the direct algorithm; backward counted as twice
    the forward."""
    fwd = case.batch * (sum(layer_flops(s) for s in shapes) + other)
    return fwd, 3.0 * fwd


def useful_flops(case: Case, shapes: list[LayerShape], other: float) -> tuple[float, float]:
    """(forward, forward+backward) useful-work FLOPs of the two-level algorithm
    (:func:`useful_layer_flops`); backward counted as twice the forward (every product has two
    adjoint products of the same size)."""
    fwd = case.batch * (sum(useful_layer_flops(s) for s in shapes) + other)
    return fwd, 3.0 * fwd


def memory_estimate(case: Case, shapes: list[LayerShape], train: bool) -> float:
    """Rough peak bytes of the score tensors of ``dense`` and ``original`` (0 for the chunked cores).

    Both materialise ``heads × |H| × pixels × Gq × slots × Gk`` scores several times (expanded copies,
    sum, mask, softmax, dropout; in training autograd keeps them for every layer)."""
    if case.impl not in ("dense", "original"):
        return 0.0
    el = 4 if case.dtype == "float32" else 2
    per_layer = []
    for s in shapes:
        N = s.X * s.Y
        slots = N if (case.impl == "dense" or s.K == N) else s.K
        scores = case.batch * s.heads * s.H * N * s.Gq * slots * s.Gk
        extra = s.H * N * N * s.p if case.impl == "dense" else 0  # pairwise encodings
        per_layer.append((scores, extra))
    copies = 4.0
    if train:
        return el * sum(copies * sc + 3 * ex for sc, ex in per_layer)
    return el * max(copies * sc + ex for sc, ex in per_layer)


def fmt_bytes(b: float) -> str:
    if b >= 2**30:
        return f"{b / 2**30:.1f} GB"
    return f"{b / 2**20:.0f} MB"


def gmean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None
