"""Native CPU kernels for the fast core, built on first use (``_kernels.cpp``, C++17 + OpenMP).

The kernels fuse the per-pixel steps of :mod:`gsa.nn.fastcore` that PyTorch would run as many
full-size elementwise passes: the two-level softmax, the dropout-masked weight accumulation and its
backward (see the C++ file's header). They need no PyTorch headers, so the build is one compiler call
of about two seconds; the shared library is cached in :func:`gsa.userdirs.kernel_dir` (``$GSA_CACHE_DIR``,
else ``kernels`` in the platform's cache folder: ``~/.cache/gsa/kernels`` on Linux), keyed by the source, the compiler
command and the CPU.

The cache is private: it is created with mode ``0o700``, and a cache directory owned by another user
or writable by group or others is refused with a warning (the kernels are then built in a fresh
private temporary directory, removed once loaded). Each library's SHA-256 is recorded at build time
in ``gsa_kernels_<key>.so.sha256`` beside it; a library is loaded only if it and its record are
regular files owned by the user, not writable by others, and the hash matches; otherwise it is
rebuilt. Builds hold an exclusive lock on ``<cache>/.lock``, so concurrent processes build once.

Used automatically for float32/float64 CPU tensors. Without a working C++ compiler, or with
``GSA_NATIVE=0`` in the environment, the fast core runs its PyTorch implementation of the same
mathematics (same results up to round-off, and the same dropout masks: both draw them from the
counter-based hash of :func:`gsa.nn.masks.keep_mask`).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from .. import userdirs

_log = logging.getLogger("gsa")

__all__ = [
    "library",
    "available",
    "usable",
    "why_not",
    "status",
    "disabled",
    "probabilities",
    "weights",
    "backward",
    "fold_add",
    "local_forward",
    "local_backward",
]

_SOURCE = Path(__file__).with_name("_kernels.cpp")
_ABI = 6
_lock = threading.Lock()
_state: dict = {"lib": None, "tried": False, "error": None, "path": None, "off": 0, "scratch": None}

_i64p = ctypes.POINTER(ctypes.c_int64)
_vp = ctypes.c_void_p
_i = ctypes.c_int
_l = ctypes.c_int64
_u = ctypes.c_uint32
_d = ctypes.c_double


def _enabled() -> bool:
    return os.environ.get("GSA_NATIVE", "1").strip().lower() not in ("0", "false", "off", "no")


def _cache_dir() -> Path:
    return userdirs.kernel_dir()


def _private_cache() -> Path:
    """The cache directory (created ``0o700``); when it is refused (another user's, writable by others,
    or not creatable) a fresh private temporary directory, with a one-line warning."""
    cache = _cache_dir()
    try:
        return userdirs.private_dir(cache)
    except OSError as exc:
        reason = exc if isinstance(exc, userdirs.NotPrivate) else f"cannot create {cache} ({exc})"
        _state["scratch"] = scratch = Path(tempfile.mkdtemp(prefix="gsa-kernels-"))
        warnings.warn(
            f"gsa: native kernel cache refused: {reason}; building in {scratch} instead "
            "(make the cache private, e.g. chmod 700, or set GSA_CACHE_DIR to a directory of your own)",
            RuntimeWarning,
            stacklevel=4,
        )
        return scratch


def _cpu_key() -> str:
    info = platform.machine() + platform.processor()
    try:  # Linux: the CPU's feature flags decide what -march=native emits
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    info += line
    except OSError:
        pass
    return info


def _commands(out: Path) -> list[list[str]]:
    """Compiler commands to try in turn: tuned with OpenMP, tuned single-threaded, then plain."""
    cxx = os.environ.get("CXX", "c++")
    base = [cxx, "-std=c++17", "-shared", "-fPIC", str(_SOURCE), "-o", str(out)]
    fast = ["-O3", "-fno-trapping-math", "-fno-math-errno"]
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        # 25-slot loops leave long scalar tails at 512 bits; 256 measured faster on AVX-512 CPUs too
        fast += ["-march=native", "-mprefer-vector-width=256"]
    elif platform.system() != "Darwin":
        fast += ["-mcpu=native"]
    return [base + fast + ["-fopenmp"], base + fast, base + ["-O2"]]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record(lib: Path) -> Path:
    return lib.with_name(lib.name + ".sha256")


def _trusted(lib: Path) -> bool:
    """Whether ``lib`` may be loaded: it and its SHA-256 record are the user's own regular files, not
    writable by others, and the library's hash is the recorded one."""
    try:
        if any(userdirs.why_not_private(p) for p in (lib, _record(lib))):
            return False
        return hmac.compare_digest(_record(lib).read_text("ascii").strip(), _sha256(lib))
    except (OSError, ValueError):  # missing, unreadable, not ASCII
        return False


@contextlib.contextmanager
def _locked(cache: Path):
    """An exclusive lock on ``cache/.lock`` (POSIX; elsewhere, or in a read-only cache, none): one
    builder at a time. Without it, concurrent builders still never see a half-written library."""
    try:
        import fcntl

        fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except (ImportError, OSError):  # Windows, read-only cache: atomic renames only
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _publish(tmp: Path, target: Path) -> None:
    """Make the freshly built ``tmp`` the library ``target`` with its SHA-256 record (both atomic renames)."""
    os.chmod(tmp, 0o700)  # the linker's mode follows the umask, which may grant group write
    fd, rec = tempfile.mkstemp(suffix=".sha256", dir=target.parent)
    with os.fdopen(fd, "w") as f:
        f.write(_sha256(tmp) + "\n")
    os.replace(rec, _record(target))
    os.replace(tmp, target)


def _build() -> Path:
    """Path of a trusted kernel library (see :func:`_trusted`), compiled into the private cache if needed."""
    src = _SOURCE.read_bytes()
    cache = _private_cache()
    errors = []
    with _locked(cache):
        for cmd in _commands(Path("OUT")):
            key = hashlib.sha256(src + " ".join(cmd).encode() + _cpu_key().encode()).hexdigest()[:16]
            target = cache / f"gsa_kernels_{key}.so"
            if _trusted(target):
                _log.debug("native kernels: using %s", target)
                return target
            _log.info("native kernels: compiling %s into %s (once per compiler and CPU)", _SOURCE.name, cache)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
            os.close(fd)
            real = [tmp if c == "OUT" else c for c in cmd]
            try:
                res = subprocess.run(real, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"{' '.join(real)}: {exc}")
                Path(tmp).unlink(missing_ok=True)
                continue
            if res.returncode == 0:
                _publish(Path(tmp), target)
                return target
            Path(tmp).unlink(missing_ok=True)
            errors.append(f"{' '.join(real)}:\n{res.stderr.strip()[-2000:]}")
    raise RuntimeError("could not compile gsa's native kernels:\n" + "\n".join(errors))


def _declare(lib) -> None:
    lib.gsa_abi_version.restype = _i
    # one C signature per statement, as in _kernels.cpp
    # fmt: off
    lib.gsa_probs.argtypes = [_i, _l, _i, _i64p, _vp, _i64p, _i64p, _vp, _vp, _i64p, _i64p, _vp, _i64p, _i64p,
                              _vp, _i, _vp, _i64p, _i64p, _i64p, _i, _i, _i, _i, _i, _i, _vp, _vp, _i]
    lib.gsa_weights.argtypes = [_i, _l, _i, _i64p, _vp, _vp, _i64p, _i, _i, _i, _i, _i, _i, _u, _u, _u, _i, _d,
                                _vp, _i64p, _i64p, _i]
    lib.gsa_backward.argtypes = [_i, _l, _i, _i64p, _vp, _vp, _i64p, _i, _i, _i, _i, _i, _i, _u, _u, _u, _i, _d,
                                 _vp, _i64p, _i64p, _vp, _i64p, _i64p, _vp, _vp, _i64p, _i64p, _vp, _i, _vp, _vp,
                                 _vp, _i64p, _i64p, _vp, _i]
    lib.gsa_fold_add.argtypes = [_i, _vp, _i64p, _l, _l, _l, _l, _l, _l, _l, _l, _l, _vp, _i64p, _i]
    lib.gsa_local_forward.argtypes = [_i, _l, _l, _i, _i, _i, _i, _i, _i, _i, _i, _i, _i, _u, _u, _u, _i, _d,
                                      _vp, _vp, _vp, _vp, _vp, _i64p, _vp, _i]
    lib.gsa_local_backward.argtypes = [_i, _l, _l, _i, _i, _i, _i, _i, _i, _i, _i, _i, _i, _u, _u, _u, _i, _d,
                                       _vp, _vp, _vp, _vp, _vp, _i64p, _vp, _vp, _vp, _vp, _vp, _vp, _i]
    lib.gsa_local_lanes.argtypes = [_i]
    lib.gsa_local_lanes.restype = _i
    # fmt: on
    for f in (
        lib.gsa_probs,
        lib.gsa_weights,
        lib.gsa_backward,
        lib.gsa_fold_add,
        lib.gsa_local_forward,
        lib.gsa_local_backward,
    ):
        f.restype = None


def library():
    """The loaded kernel library, building it if needed; ``None`` when unavailable (see :func:`status`)."""
    if _state["tried"]:
        return _state["lib"]
    with _lock:
        if _state["tried"]:
            return _state["lib"]
        if not _enabled():
            _state["error"] = "disabled by GSA_NATIVE=0"
        else:
            try:
                path = _build()
                lib = ctypes.CDLL(str(path))
                _declare(lib)
                if lib.gsa_abi_version() != _ABI:
                    raise RuntimeError(f"{path} has ABI {lib.gsa_abi_version()}, expected {_ABI}")
                _state["lib"], _state["path"] = lib, path
            except Exception as exc:  # no compiler, ...: fall back to PyTorch
                _state["error"] = str(exc)
                warnings.warn(
                    f"gsa: native CPU kernels unavailable, using the (slower) PyTorch path: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            finally:
                if _state["scratch"] is not None:  # a loaded library needs no file any more
                    shutil.rmtree(_state["scratch"], ignore_errors=True)
        _state["tried"] = True
    return _state["lib"]


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the native kernels can be used in this process (a constant to ``torch.compile``)."""
    return library() is not None


def status() -> str:
    """One line for ``gsa info`` and benchmarks: where the library is, or why it is not used."""
    lib = library()
    return f"native kernels: {_state['path']}" if lib is not None else f"native kernels off: {_state['error']}"


@contextlib.contextmanager
def disabled():
    """Within this context the fast core uses its PyTorch implementation (tests compare the two)."""
    _state["off"] += 1
    try:
        yield
    finally:
        _state["off"] -= 1


def why_not(t: torch.Tensor) -> str | None:
    """Why the kernels cannot take ``t`` here (``None``: they can): they need a float32/float64 CPU tensor,
    a built library, and no :func:`disabled` context (``torch.compile`` reaches them through the
    custom operators of :mod:`gsa.nn.backends.native_op`)."""
    if _state["off"]:
        return "the native kernels are disabled (gsa.nn.native.disabled())"
    if t.device.type != "cpu":
        return f"the native kernels run on the CPU, the tensors are on {t.device}"
    if t.dtype not in (torch.float32, torch.float64):
        return f"the native kernels take float32 or float64, got {t.dtype}"
    if not available():
        return status()
    return None


def usable(t: torch.Tensor) -> bool:
    """True for float32/float64 CPU tensors, with the library loaded (see :func:`why_not`)."""
    return why_not(t) is None


# ------------------------------------------------------------------------------------------------
# wrappers: tensors → pointers and strides


def _arr(vals) -> ctypes.Array:
    vals = [int(v) for v in vals]
    return (ctypes.c_int64 * max(1, len(vals)))(*vals)


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _code(t: torch.Tensor) -> int:
    return 0 if t.dtype == torch.float32 else 1


def _split(t: torch.Tensor, pix: tuple[int, ...]):
    """Pixel strides and inner strides of ``t`` broadcast to the pixel layout ``pix``."""
    nd = len(pix)
    t = t.expand(*pix, *t.shape[nd:])
    st = t.stride()
    return _arr(st[:nd]), _arr(st[nd:])


def _classes(u_of_h, U: int):
    return _arr(u_of_h.tolist()) if (u_of_h is not None and U > 1) else None


def _threads() -> int:
    return max(1, torch.get_num_threads())


def probabilities(C, Gt, P, mb, u_of_h, H: int, scratch=None, qp=None, tabT=None):
    """Two-level softmax of one chunk: ``C (*PIX, Gq, Gk, Kx, Ky)`` (any strides), ``Gt (*PIX, Gq, U, Gk)``
    or None, positional scores ``P (*PIX, Gq, H, Kx, Ky)`` or, when ``P`` is None, the positional query
    part ``qp (*PIX, Gq, p)`` and the transposed table ``tabT (H, p, Kx·Ky)``; ``mb`` broadcastable
    additive mask or None → ``E (*PIX, Gq, U, Gk, Kx, Ky)`` (None when ``Gk == 1``) and
    ``Pn (*PIX, Gq, H, Kx, Ky)``, in buffers of ``scratch`` (a ``get(name, shape, dtype, device)``
    cache) when given."""
    pix = tuple(C.shape[:-4])
    Gq, Gk, Kx, Ky = C.shape[-4:]
    npix = math.prod(pix)
    U = 1 if Gt is None else Gt.shape[-2]
    if Gt is not None:
        Gt = Gt.contiguous()

    def new(name, shape):
        if scratch is None:
            return torch.empty(shape, dtype=C.dtype)
        return scratch.get(name, shape, C.dtype, C.device)

    E = None if Gk == 1 else new("E", (*pix, Gq, U, Gk, Kx, Ky))
    Pn = new("Pn", (*pix, Gq, H, Kx, Ky))
    cps, cis = _split(C, pix)
    pps, pis = _split(P, pix) if P is not None else (_arr([]), _arr([]))
    qps, qis = _split(qp, pix) if P is None else (_arr([]), _arr([]))
    np_ = 0 if P is not None else qp.shape[-1]
    if mb is not None:
        mb = mb.reshape(*mb.shape[: len(pix)], Kx, Ky) if mb.dim() != len(pix) + 2 else mb
        mps, mis = _split(mb, pix)
    else:
        mps, mis = _arr([]), _arr([])
    library().gsa_probs(
        _code(C),
        npix,
        len(pix),
        _arr(pix),
        _ptr(C),
        cps,
        cis,
        _ptr(Gt),
        _ptr(P),
        pps,
        pis,
        _ptr(qp if P is None else None),
        qps,
        qis,
        _ptr(tabT if P is None else None),
        np_,
        _ptr(mb),
        mps,
        mis,
        _classes(u_of_h, U),
        Gq,
        U,
        Gk,
        H,
        Kx,
        Ky,
        _ptr(E),
        _ptr(Pn),
        _threads(),
    )
    return E, Pn


def _softmax_args(Pn, E, u_of_h, U: int, drop: tuple[int, int, int, int], scale: float) -> tuple:
    """The arguments ``gsa_weights`` and ``gsa_backward`` begin with: ``Pn``'s dtype code and pixel
    layout, ``Pn`` and ``E``, the classes, ``Gq, U, Gk, H, Kx, Ky``, the dropout's ``thr, k0, k1, on``
    and ``scale``."""
    pix = tuple(Pn.shape[:-4])
    Gq, H, Kx, Ky = Pn.shape[-4:]
    Gk = 1 if E is None else E.shape[-3]
    layout = (_code(Pn), math.prod(pix), len(pix), _arr(pix))
    thr, k0, k1, on = drop
    return (*layout, _ptr(Pn), _ptr(E), _classes(u_of_h, U), Gq, U, Gk, H, Kx, Ky, thr, k0, k1, on, scale)


def weights(Pn, E, W, u_of_h, drop: tuple[int, int, int, int], scale: float) -> None:
    """Write ``scale · Σ_{a_q} Pn ⊙ E ⊙ D`` into the (strided) ``W (*PIX, H, Gk, Kx, Ky)``."""
    U = 1 if E is None else E.shape[-4]
    wps, wis = _split(W, tuple(Pn.shape[:-4]))
    library().gsa_weights(*_softmax_args(Pn, E, u_of_h, U, drop, scale), _ptr(W), wps, wis, _threads())


def backward(
    Pn,
    E,
    dW,
    W,
    dC,
    dGt,
    u_of_h,
    drop: tuple[int, int, int, int],
    scale: float,
    dP=None,
    qp=None,
    tabT=None,
    dqp=None,
    dtabT=None,
) -> None:
    """Backward of the weights and both softmaxes of one chunk (see ``gsa_backward`` in ``_kernels.cpp``).

    In: ``Pn``, ``E`` (contiguous, from :func:`probabilities`), ``dW (*PIX, H, Gk, Kx, Ky)`` any strides.
    Out (written): ``W`` (strided), ``dC (*PIX, Gq, Gk, Kx, Ky)`` (strided), ``dGt (*PIX, Gq, U, Gk)``
    contiguous or None, and either ``dP`` (like ``Pn``) or, with ``qp (*PIX, Gq, p)`` and ``tabT (H, p, K)``,
    ``dqp (*PIX, Gq, p)`` contiguous and ``dtabT`` (zero-initialised; accumulated). ``scale`` = ``1/(1 − p)``."""
    pix = tuple(Pn.shape[:-4])
    U = E.shape[-4] if E is not None else (1 if dGt is None else dGt.shape[-2])
    dwps, dwis = _split(dW, pix)
    wps, wis = _split(W, pix)
    dcps, dcis = _split(dC, pix)
    qps, qis = _split(qp, pix) if dP is None else (_arr([]), _arr([]))
    np_ = 0 if dP is not None else qp.shape[-1]
    library().gsa_backward(
        *_softmax_args(Pn, E, u_of_h, U, drop, scale),
        _ptr(dW),
        dwps,
        dwis,
        _ptr(W),
        wps,
        wis,
        _ptr(dP),
        _ptr(qp if dP is None else None),
        qps,
        qis,
        _ptr(tabT if dP is None else None),
        np_,
        _ptr(dqp),
        _ptr(dtabT),
        _ptr(dC),
        dcps,
        dcis,
        _ptr(dGt),
        _threads(),
    )


def fold_add(tiles, dst, nx: int, ny: int, G: int, Wx: int, Wy: int, Tx: int, Ty: int) -> None:
    """``dst (Bc, rows, cols, G, c)`` (any strides) ``+=`` the overlapping key tiles
    ``(Bc·nx·ny, Wx·Wy·G, c)`` (rows ``(wx, wy, a_k)``, any strides; tile ``(ix, iy)`` starts at row ``ix·Tx``, column ``iy·Ty``)."""
    Bc, c = dst.shape[0], dst.shape[-1]
    library().gsa_fold_add(
        _code(dst),
        _ptr(tiles),
        _arr(tiles.stride()),
        Bc,
        nx,
        ny,
        G,
        Wx,
        Wy,
        c,
        Tx,
        Ty,
        _ptr(dst),
        _arr(dst.stride()),
        _threads(),
    )


# ------------------------------------------------------------------------------------------------
# fused local attention (one kernel per direction; see "fused local attention" in _kernels.cpp)


def _lanes(dtype: torch.dtype) -> int:
    """The fused kernels' lane padding for ``dtype``: batch × heads is padded to a multiple of half a 64-byte
    SIMD block (8 float32, 4 float64 lanes); the kernels run whole blocks and a last half block."""
    return int(library().gsa_local_lanes(0 if dtype == torch.float32 else 1))


def _to_lanes(t: torch.Tensor | None, Bp: int) -> torch.Tensor | None:
    """``(Bn, ...)`` → ``(..., Bp)`` contiguous, batch × heads last and zero-padded to ``Bp`` lanes (no copy
    for a batch-innermost tensor such as :meth:`gsa.nn.attention.AttentionHeads._project` makes, ``Bn = Bp``)."""
    if t is None:
        return None
    t = t.movedim(0, -1)
    if t.shape[-1] != Bp:
        t = torch.nn.functional.pad(t, (0, Bp - t.shape[-1]))
    return t.contiguous()


def _from_lanes(t: torch.Tensor, Bn: int) -> torch.Tensor:
    """Inverse of :func:`_to_lanes`: ``(..., Bp)`` → a ``(Bn, ...)`` view, batch × heads innermost in memory."""
    return t[..., :Bn].movedim(-1, 0)


def lanes_like(t: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """An uninitialised ``(Bn, *shape)`` tensor (default ``t``'s shape) laid out as the fused kernels
    return theirs: a view of an ``(*shape, Bp)`` contiguous one (also for the operators' fakes)."""
    Bn, shape = t.shape[0], t.shape[1:] if shape is None else shape
    return _from_lanes(t.new_empty((*shape, _padded(Bn, t.dtype))), Bn)


def _local_args(q, k, v, table, gt, classes, patch_size: int, Bn: int, Bp: int, drop, scale: float) -> tuple:
    """Dtype code, sizes, dropout and pointers shared by the two fused kernels (tensors in lane layout)."""
    X, Y, Gq, d = q.shape[:4]
    Gk, dv = k.shape[2], v.shape[-2]
    H, p = table.shape[0], table.shape[-1]
    U = 1 if gt is None else gt.shape[3]
    sizes = (_code(q), Bp, Bn, X, Y, Gq, Gk, H, U, d, dv, p, patch_size, *drop, scale)
    return (*sizes, _ptr(q), _ptr(k), _ptr(v), _ptr(table), _ptr(gt), _classes(classes, U))


def _padded(Bn: int, dtype: torch.dtype) -> int:
    L = _lanes(dtype)
    return -(-Bn // L) * L


_NO_DROP = (0, 0, 0, 0)


def local_forward(q, k, v, table, gt, classes, patch_size: int, drop=_NO_DROP, scale: float = 1.0) -> torch.Tensor:
    """Local attention in one fused pass: ``q (Bn, X, Y, Gq, d)``, ``k (Bn, X, Y, Gk, d)``, ``v (Bn, X, Y, Gk, dv)``,
    ``table (|H|, k², p)``, ``gt (Bn, X, Y, Gq, U, Gk)`` or None, ``classes (|H|,)`` or None, of one dtype
    → ``(Bn, X, Y, |H|, dv)``. Attention dropout: ``drop`` from :func:`gsa.nn.masks.dropout_params` and
    ``scale = 1/(1 − p)``; the probability of ``(b, pixel, a_q, h, offset, a_k)`` is kept where
    :func:`gsa.nn.masks.keep_mask` of an ``(X·Y, Gq, |H|, k², Gk, Bn)`` tensor is."""
    Bn, X, Y = q.shape[:3]
    Bp = _padded(Bn, q.dtype)
    ql, kl, vl, gl = (_to_lanes(t, Bp) for t in (q, k, v, gt))
    table = table.contiguous()
    out = torch.empty((X, Y, table.shape[0], v.shape[-1], Bp), dtype=q.dtype)
    args = _local_args(ql, kl, vl, table, gl, classes, patch_size, Bn, Bp, drop, scale)
    library().gsa_local_forward(*args, _ptr(out), _threads())
    return _from_lanes(out, Bn)


def local_backward(dout, q, k, v, table, gt, classes, patch_size: int, drop=_NO_DROP, scale: float = 1.0) -> tuple:
    """Gradients ``(dq, dk, dv, dtable, dgt)`` of :func:`local_forward` for ``dout (Bn, X, Y, |H|, dv)``;
    ``dgt`` None when ``gt`` is. Recomputes the probabilities per pixel."""
    Bn = q.shape[0]
    Bp = _padded(Bn, q.dtype)
    ql, kl, vl, gl, dol = (_to_lanes(t, Bp) for t in (q, k, v, gt, dout))
    table = table.contiguous()
    dq = torch.empty_like(ql)
    dk, dv, dtable = torch.zeros_like(kl), torch.zeros_like(vl), torch.zeros_like(table)
    dgt = None if gl is None else torch.empty_like(gl)
    library().gsa_local_backward(
        *_local_args(ql, kl, vl, table, gl, classes, patch_size, Bn, Bp, drop, scale),
        _ptr(dol),
        _ptr(dq),
        _ptr(dk),
        _ptr(dv),
        _ptr(dtable),
        _ptr(dgt),
        _threads(),
    )
    grads = (_from_lanes(t, Bn) for t in (dq, dk, dv))
    # dgt batch-major (contiguous), the layout in which the attention layers make the group scores
    return (*grads, dtable, None if dgt is None else _from_lanes(dgt, Bn).contiguous())
