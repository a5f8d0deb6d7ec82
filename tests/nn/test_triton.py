"""The ``"triton"`` backend against the dense oracle and the CPU kernels' dropout masks.

With CUDA the kernels run natively on the GPU. Without, they run under Triton's interpreter, which
``TRITON_INTERPRET=1`` selects only when set before triton is first imported (torch imports it with
gsa): so the kernel tests run in a subprocess with it set (:func:`test_kernels_under_the_interpreter`),
or directly when this process was started with it. The interpreter is slow: tiny shapes. Skipped
when triton is not installed (``pip install "gsa-nets[gpu]"``).
"""

import os
import subprocess
import sys

import pytest
import torch

from gsa.nn import backends, group_attention, masks, native
from gsa.nn.backends import AttentionCall, native_op
from gsa.nn.backends import triton as tb

pytest.importorskip("triton", reason="triton is not installed (the [gpu] extra)")

CUDA = torch.cuda.is_available()
INTERPRETING = not CUDA and os.environ.get("TRITON_INTERPRET") == "1"
kernels = pytest.mark.skipif(
    not (CUDA or INTERPRETING), reason="no CUDA: run under the interpreter by test_kernels_under_the_interpreter"
)


@pytest.mark.skipif(CUDA or INTERPRETING, reason="the kernel tests run in this process")
def test_kernels_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout


@pytest.fixture
def device():
    """``"cuda"`` when present, else ``"cpu"`` (under the interpreter)."""
    return "cuda" if CUDA else "cpu"


def _inputs(Gq, Gk, H, U, ps, X, Y, B=2, d=7, dv=5, p=3, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(0)
    R = (2 * X - 1) * (2 * Y - 1) if ps is None else ps * ps

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).to(device).requires_grad_()

    q, k, v = rnd(B, X, Y, Gq, d), rnd(B, X, Y, Gk, d), rnd(B, X, Y, Gk, dv)
    table = rnd(H, R, p)
    gs = None if Gq == 1 else rnd(B, X, Y, Gq, U, Gk)
    classes = None if U == 1 else (torch.arange(H) % U).to(device)
    return q, k, v, table, gs, classes


def _run(backend, inputs, ps, **kw):
    """Output and the gradients of every float input for a fixed random output gradient."""
    q, k, v, table, gs, classes = inputs
    out = group_attention(q, k, v, table, group_scores=gs, classes=classes, patch_size=ps, backend=backend, **kw)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaves = [t for t in (q, k, v, table, gs) if t is not None]
    return out, torch.autograd.grad((out.double() * w.to(out.device)).sum(), leaves)


def _close(got, want, tol):
    (o1, g1), (o2, g2) = got, want
    torch.testing.assert_close(o1.double().cpu(), o2.double().cpu(), rtol=tol, atol=tol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a.double().cpu(), b.double().cpu(), rtol=tol, atol=tol)


CASES = [  # (Gq, Gk, |H|, U), patch size, X, Y: lifting, an abelian group, several classes (p4m-like)
    pytest.param((1, 1, 4, 1), 3, 4, 3, id="lifting-local"),
    pytest.param((4, 4, 4, 1), None, 3, 3, id="p4-global"),
    pytest.param((8, 8, 8, 4), 3, 3, 3, id="p4m-local-4-classes"),
]


@kernels
@pytest.mark.parametrize("shape,ps,X,Y", CASES)
def test_values_and_gradients_match_the_oracle_in_float64(device, shape, ps, X, Y):
    inputs = _inputs(*shape, ps, X, Y, device=device)
    _close(_run("triton", inputs, ps), _run("reference", inputs, ps), 1e-10)


@kernels
def test_float32_global_with_classes(device):
    inputs = _inputs(8, 8, 8, 4, None, 2, 2, dtype=torch.float32, device=device)
    _close(_run("triton", inputs, None), _run("reference", inputs, None), 2e-5)


@kernels
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_half_precision_inputs_accumulate_in_float32(device, dtype, tol):
    low = _inputs(4, 4, 4, 1, 3, 3, 3, dtype=dtype, device=device)
    out, grads = _run("triton", low, 3)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    exact = tuple(None if t is None else t.detach().double().requires_grad_(t.dtype.is_floating_point) for t in low)
    _close((out, grads), _run("reference", exact, 3), tol)


@kernels
@pytest.mark.parametrize("ps", [3, None])
def test_several_blocks_per_image(device, monkeypatch, ps):
    """Blocks of 8 tokens: a local block's window band is narrower than the image and spans several
    column blocks; the online softmax rescales."""
    if not CUDA:
        monkeypatch.setattr(tb, "_INTERPRETER_BLOCK", 8)
    inputs = _inputs(1, 1, 4, 1, ps, *((6, 3) if ps else (4, 3)), device=device)
    _close(_run("triton", inputs, ps), _run("reference", inputs, ps), 1e-10)


@kernels
@pytest.mark.skipif(not native.available(), reason="the native kernels are not built here")
@pytest.mark.parametrize(
    "shape,ps,X,Y,chunk",
    [
        pytest.param((4, 4, 4, 1), 3, 3, 3, 2000, id="p4-local-row-and-batch-chunks-dummy-pixels"),
        pytest.param((1, 1, 4, 1), None, 3, 3, 200, id="lifting-global-chunks"),
    ],
)
def test_dropout_masks_equal_the_native_kernels_for_the_same_seed(device, shape, ps, X, Y, chunk):
    inputs = _inputs(*shape, ps, X, Y, B=3 if ps else 2, device=device)
    q, k, v, table, gs, classes = inputs
    seed = torch.tensor(123456789, dtype=torch.int64)
    call = AttentionCall(q, k, v, table, gs, classes, ps, 0.3, chunk, True)
    out = tb.attend(call, seed.to(device))
    cpu = [None if t is None else t.detach().cpu().requires_grad_(t.is_floating_point()) for t in inputs]
    want = native_op.chunked_attention(*cpu[:4], cpu[4], cpu[5], seed, ps or 0, 0.3, chunk)
    torch.testing.assert_close(out.detach().cpu(), want.detach(), rtol=1e-10, atol=1e-10)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = torch.autograd.grad((out * w.to(device)).sum(), [t for t in inputs if t is not None and t.requires_grad])
    ref = torch.autograd.grad((want * w).sum(), [t for t in cpu if t is not None and t.requires_grad])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10)
    # and a different seed gives different masks
    other = tb.attend(call, torch.tensor(7, dtype=torch.int64, device=device))
    assert (other - out).abs().max() > 1e-3


@kernels
def test_dropout_seed_comes_from_the_devices_generator_like_the_native_backends(device):
    """Same generator state, same masks: the CPU comparison of the layer-level op (interpreter only)."""
    if CUDA:
        pytest.skip("CPU and CUDA generators draw different seeds; the explicit-seed test covers CUDA")
    inputs = _inputs(1, 1, 4, 1, 3, 3, 3, device=device)
    outs = []
    for name in ("triton", "pytorch"):
        torch.manual_seed(3)
        with masks.hash_masks():
            outs.append(_run(name, inputs, 3, dropout=0.25))
    _close(outs[0], outs[1], 1e-10)


def test_why_not_gives_reasons(device, monkeypatch):
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # why_not reads it per call
    q, k, v, table, gs, classes = _inputs(1, 1, 4, 1, 3, 3, 3, device=device)

    def call(**kw):
        args = dict(q=q, k=k, v=v, table=table, group_scores=gs, classes=classes, patch_size=3, dropout=0.0)
        args.update(chunk_elements=1 << 20, recompute=True)
        args.update(kw)
        return AttentionCall(**args)

    assert backends.why_not("triton", call()) is None
    assert "recompute=False" in backends.why_not("triton", call(recompute=False))
    with monkeypatch.context() as m:
        m.setattr(tb, "compiling", lambda: True)
        assert "torch.compile" in backends.why_not("triton", call())
    assert "one dtype" in backends.why_not("triton", call(v=v.float()))
    assert "one dtype" in backends.why_not("triton", call(q=q.int(), k=k.int(), v=v.int(), table=table.int()))
    with monkeypatch.context() as m:
        m.setattr(tb, "_version", lambda: (3, 2))
        assert "float64 needs triton >= 3.9" in backends.why_not("triton", call())
        f32 = dict(q=q.float(), k=k.float(), v=v.float(), table=table.float())
        assert backends.why_not("triton", call(**f32, group_scores=None if gs is None else gs.float())) is None
    if not CUDA:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        assert "needs a CUDA device, got cpu" in backends.why_not("triton", call())
    monkeypatch.setattr(tb, "_installed", lambda: False)
    assert 'pip install "gsa-nets[gpu]"' in backends.why_not("triton", call())


def test_auto_prefers_triton_on_cuda_only(device):
    inputs = _inputs(4, 4, 4, 1, 3, 3, 3, device=device)
    call = AttentionCall(*inputs, 3, 0.1, 1 << 20, True)
    assert backends.select("auto", call).name == ("triton" if CUDA else ("fused" if native.available() else "pytorch"))
    assert "triton" in backends.names() and tb.BACKEND.auto_devices == ("cuda",)
