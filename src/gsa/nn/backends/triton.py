"""The ``"triton"`` backend: fused Triton kernels for local and global group attention (CUDA).

One program handles a block of query tokens ``(i, a_q)`` for one output element ``h``: it visits the
key tokens ``(j, a_k)`` of the block's window band, adds content, positional (table looked up by
offset) and group scores (of ``h``'s conjugation class) in registers, and runs an online softmax over
``(j, a_k)`` — the reference's one softmax, i.e. both levels of the chunked core's factorised
softmax — with float32 accumulation (float64 for float64 inputs); float16/bfloat16 inputs are
accepted. The per-``a_q`` rows are summed afterwards (Eq. 16). Backward
(:class:`TritonAttention`) keeps only the inputs, the rows' outputs and log-sum-exps, and
recomputes the probabilities in two kernels (queries, group scores and table; keys and values).

Dropout draws its masks from the counter hash of :mod:`gsa.nn.masks` with the counters the chunked
core gives the same probability (the chunk plan of ``chunk_elements``, :class:`gsa.nn.fastcore.Spec`,
is reproduced in the kernel): for the same seed and ``chunk_elements`` the masks equal the native
CPU kernels' (and the PyTorch path's inside :func:`gsa.nn.masks.hash_masks`). The seed is drawn on
the queries' device (no host synchronisation).

Triton is optional (``pip install "gsa-nets[gpu]"``) and imported only when this backend runs. On
the CPU the kernels run under Triton's interpreter when ``TRITON_INTERPRET=1`` is set before Triton
is imported (slow: for tests). While ``torch.compile`` traces, it steps aside (the kernels are not
wrapped as a custom operator yet) and ``auto`` takes FlexAttention or the chunked core, as before.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from ... import extras as _extras
from .. import fastcore as _fc
from . import AttentionCall, compiling

__all__ = ["BACKEND", "attend", "TritonAttention"]

_INTERPRETER_BLOCK = 128  # rows/columns per block under the interpreter (fewer, larger blocks run faster there)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@functools.lru_cache(maxsize=None)
def _installed() -> bool:
    return importlib.util.find_spec("triton") is not None


#: float64 ``tl.dot`` compiles with triton 3.9 (tested); triton 3.2 refuses it ("Unsupported lhs dtype fp64")
_FLOAT64_TRITON = (3, 9)


@functools.lru_cache(maxsize=None)
def _version() -> tuple[int, ...]:
    """The installed triton's ``(major, minor)`` (read from its metadata, without importing it)."""
    from importlib.metadata import version

    return tuple(int(p) for p in version("triton").split(".")[:2] if p.isdigit())


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def why_not(call: AttentionCall) -> str | None:
    """Why the kernels cannot compute ``call`` here (``None``: they can)."""
    if not _installed():
        return f"triton is not installed ({_extras.install_command('gpu')})"
    if call.q.device.type != "cuda" and not _interpreting():
        return f"needs a CUDA device, got {call.q.device.type} (TRITON_INTERPRET=1 runs Triton's CPU interpreter)"
    tensors = [call.q, call.k, call.v, call.table] + ([] if call.group_scores is None else [call.group_scores])
    if call.q.dtype not in _DTYPES or any(t.dtype != call.q.dtype for t in tensors):
        return f"needs one dtype of {', '.join(str(d) for d in _DTYPES)} for all inputs, got {call.q.dtype}"
    if call.q.dtype == torch.float64 and _version() < _FLOAT64_TRITON:
        least, found = ".".join(map(str, _FLOAT64_TRITON)), ".".join(map(str, _version()))
        return f"float64 needs triton >= {least} (float64 matrix products), found {found}"
    if not call.recompute:
        return "recompute=False keeps the probabilities for autograd, which only the PyTorch path does"
    if compiling():
        return "torch.compile traces the chunked core or FlexAttention; the kernels are not a custom op yet"
    return None


@functools.lru_cache(maxsize=None)
def _kernels():
    from . import _triton_kernels

    return _triton_kernels


def _pow2(n: int, least: int) -> int:
    return max(least, 1 << max(0, (n - 1).bit_length()))


class _Geometry:
    """Shapes, constexpr settings and the dropout chunk plan of one call (no tensors but the seed)."""

    def __init__(self, call: AttentionCall, seed: torch.Tensor):
        import triton.language as tl

        q, k, v, table = call.q, call.k, call.v, call.table
        self.B, self.X, self.Y, self.Gq, self.d = q.shape
        self.Gk, self.dv, self.H, self.p = k.shape[3], v.shape[-1], call.order, table.shape[-1]
        gs = call.group_scores
        self.U = 1 if gs is None else gs.shape[4]
        self.has_gs = gs is not None
        self.seed = seed
        self.thr, _, _, on = _dropout_params(call.dropout)
        self.drop = bool(on)
        self.scale = 1.0 / (1.0 - call.dropout)
        spec = _fc.Spec(
            call.neighbourhood,
            self.X,
            self.Y,
            self.B,
            self.Gq,
            self.Gk,
            self.H,
            self.p,
            None,
            call.chunk_elements,
            call.dropout,
        )
        self.crows, self.cb = spec.rows, spec.bchunk
        self.tx, self.ty = spec.tiles
        self.local = call.patch_size is not None
        self.rad = call.patch_size // 2 if self.local else 0
        # window slots (KX, KY) of the dropout counters and R table rows: k×k, or the image and all offsets
        self.kx, self.ky = (call.patch_size, call.patch_size) if self.local else (self.X, self.Y)
        self.r = self.kx * self.ky if self.local else (2 * self.X - 1) * (2 * self.Y - 1)
        self.acc = tl.float64 if q.dtype == torch.float64 else tl.float32
        small = q.device.type != "cuda"  # the interpreter: fewer, smaller blocks are faster
        self.bm = self.bn = _INTERPRETER_BLOCK if small else 64
        self.bd, self.bdv = _pow2(self.d, 16), _pow2(self.dv, 16)
        self.bg = _pow2(self.Gk, 2)

    def consts(self) -> dict:
        """The constexpr arguments shared by the kernels."""
        return dict(
            X=self.X, Y=self.Y, Gq=self.Gq, Gk=self.Gk, H=self.H, P=self.p, U=self.U, LOCAL=self.local,
            RAD=self.rad, R=self.r, KX=self.kx, KY=self.ky, HAS_GS=self.has_gs, DROP=self.drop,
            CROWS=self.crows, CB=self.cb, TX=self.tx, TY=self.ty, BM=self.bm, BN=self.bn, BD=self.bd,
            BDV=self.bdv, ACC=self.acc,
        )  # fmt: skip


def _dropout_params(p: float):
    from .. import masks

    return masks.dropout_params(p, 0, 0)


def _classes(call: AttentionCall, H: int, U: int, device) -> torch.Tensor:
    """``(H,)`` int64 class of each output element (zeros with one class)."""
    if call.classes is None or U == 1:
        return torch.zeros(H, dtype=torch.int64, device=device)
    return call.classes.to(device=device, dtype=torch.int64)


def _forward(q, k, v, table, gs, cls, g: _Geometry):
    """Row outputs ``(B, N, Gq, H, dv)`` and log-sum-exps ``(B, H, N·Gq)`` (accumulation dtype)."""
    kern = _kernels()
    N = g.X * g.Y
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    o = torch.empty(g.B, N * g.Gq, g.H, g.dv, dtype=ct, device=q.device)
    lse = torch.empty(g.B, g.H, N * g.Gq, dtype=ct, device=q.device)
    grid = (-(-N * g.Gq // g.bm), g.B, g.H)
    kern.fwd[grid](q, k, v, table, gs if gs is not None else q, cls, g.seed, o, lse, g.B, g.d, g.dv, g.thr,
                   g.scale, **g.consts())  # fmt: skip
    return o.view(g.B, N, g.Gq, g.H, g.dv), lse


def _backward(q, k, v, table, gs, cls, g: _Geometry, o_rows, lse, do):
    """``(dq, dk, dv, dtable, dgs)`` in the inputs' shapes (``dgs`` None without group scores)."""
    kern = _kernels()
    N = g.X * g.Y
    ct = lse.dtype
    do = do.contiguous()
    delta = (o_rows * do.view(g.B, N, 1, g.H, g.dv).to(ct)).sum(-1)  # (B, N, Gq, H)
    delta = delta.view(g.B, N * g.Gq, g.H).transpose(1, 2).contiguous()
    hs = torch.sort(cls, stable=True).indices
    ones = torch.ones_like(cls)  # class starts by index_add (bincount would read its size on the host)
    ustart = torch.zeros(g.U + 1, dtype=torch.int64, device=q.device).index_add_(0, cls + 1, ones).cumsum(0)
    dq = torch.empty(q.shape, dtype=ct, device=q.device)
    dtab = torch.zeros(table.shape, dtype=ct, device=q.device)
    dgs = torch.empty(gs.shape, dtype=ct, device=q.device) if gs is not None else dq
    consts = g.consts()
    args = (g.B, g.d, g.dv, g.thr, g.scale)
    gsa = gs if gs is not None else q
    grid = (-(-N * g.Gq // g.bm), g.B)
    kern.bwd_rows[grid](q, k, v, table, gsa, hs, ustart, g.seed, do, lse, delta, dq, dtab, dgs, *args,
                        BG=g.bg, **consts)  # fmt: skip
    dk = torch.empty(k.shape, dtype=ct, device=q.device)
    dv = torch.empty(v.shape, dtype=ct, device=q.device)
    grid = (-(-N * g.Gk // g.bn), g.B)
    kern.bwd_cols[grid](q, k, v, table, gsa, cls, g.seed, do, lse, delta, dk, dv, *args, **consts)
    dt = q.dtype
    return dq.to(dt), dk.to(dt), dv.to(dt), dtab.to(dt), None if gs is None else dgs.to(dt)


class TritonAttention(torch.autograd.Function):
    """The kernels with a recomputing backward: saves the inputs, the rows' outputs and log-sum-exps."""

    @staticmethod
    def forward(ctx, q, k, v, table, gs, cls, g: _Geometry):
        o_rows, lse = _forward(q, k, v, table, gs, cls, g)
        ctx.g = g
        ctx.save_for_backward(q, k, v, table, gs, cls, o_rows, lse)
        return o_rows.sum(2).to(q.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, table, gs, cls, o_rows, lse = ctx.saved_tensors
        return (*_backward(q, k, v, table, gs, cls, ctx.g, o_rows, lse, do), None, None)


def attend(call: AttentionCall, seed: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, X, Y, |H|, dv)`` by the Triton kernels; ``seed`` (int64 scalar tensor) is drawn on the
    queries' device like the native backend draws its own when not given."""
    q, k, v, table, gs = (t if t is None else t.contiguous() for t in (call.q, call.k, call.v, call.table,
                                                                         call.group_scores))  # fmt: skip
    if seed is None:
        seed = torch.randint(0, 2**62, (), dtype=torch.int64, device=q.device) if call.dropout > 0 else None
    if seed is None:
        seed = torch.zeros((), dtype=torch.int64, device=q.device)
    g = _Geometry(call, seed.to(q.device))
    cls = _classes(call, g.H, g.U, q.device)
    out = TritonAttention.apply(q, k, v, table, gs, cls, g)
    return out.view(g.B, g.X, g.Y, g.H, g.dv)


class _Triton:
    name = "triton"
    description = "fused Triton kernels, forward and recomputing backward (CUDA; CPU under TRITON_INTERPRET=1)"
    auto_devices: tuple[str, ...] = ("cuda",)

    def __repr__(self) -> str:
        return f"<gsa attention backend {self.name!r}>"

    def why_not(self, call: AttentionCall) -> str | None:
        """See :func:`why_not`."""
        return why_not(call)

    def attend(self, call: AttentionCall) -> torch.Tensor:
        """See :func:`attend`."""
        return attend(call)


BACKEND = _Triton()
