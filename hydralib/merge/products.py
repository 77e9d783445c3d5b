"""Matrix products for the factored solvers, routed to the faster CPU library for this machine.

The exact HydraOpt solver (:func:`~.hydraopt.solve_exact`) spends its time in
a few kinds of product: skinny float32 products with the stacked lora_A
``(N r, d_in)`` (the Krylov steps of :func:`~.lowrank.factored_top_eigen`,
:func:`matmul_nt`), batched products of the factors such as the heads
``(N, d_out, r) @ (N, r, r')`` (:func:`matmul`), batched float64 Grams
``(N, r, d) -> (N, r, r)`` (:func:`gram64`) and one float64
``(N r, d_in) @ (d_in, r')`` (:func:`matmul64_rows`). Which CPU library is
fastest for them depends on the CPU: torch's MKL takes slow code paths on
AMD CPUs and is the fastest on Intel ones, numpy's OpenBLAS sits in between,
and oneDNN (torch's ``linear`` kernel) runs AVX-512 code on both. So
:func:`matmul`, :func:`matmul64`, :func:`gram64` and :func:`matmul64_rows`
use torch on Intel CPUs (when torch has MKL) and numpy elsewhere (a Gram
``x @ x.T`` always numpy, whose symmetric rank-k update does half the work),
and :func:`matmul_nt` uses oneDNN where it is available (measured on the
project's two benchmark machines, one thread; see :func:`blas_backend`).
Every choice computes the same product in the same dtype, so results agree
to rounding; other devices (CUDA) always use torch.

``cpu_backends()`` reports the choices (the benchmark records them); tests
switch them by setting the module attributes ``_ONEDNN_NT`` (False: no
oneDNN) and ``_BLAS_BACKEND`` (``"torch"`` or ``"numpy"``).

Example
-------
>>> import torch
>>> a = torch.randn(3, 5, 64, dtype=torch.float32)
>>> g = gram64(a)                              # (3, 5, 5) float64 Grams a_i a_i^T
>>> bool(torch.allclose(g, a.double() @ a.double().mT))
True
>>> sorted(cpu_backends())
['blas', 'float32_nt', 'vendor']
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

__all__ = [
    "empty_buffer",
    "to_float64",
    "matmul64",
    "gram64",
    "matmul64_rows",
    "matmul",
    "matmul_nt",
    "cpuinfo",
    "cpu_vendor",
    "blas_backend",
    "cpu_backends",
]

#: numpy dtypes of the torch dtypes that :func:`empty_buffer` can back with numpy memory.
_NUMPY_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of ``/proc/cpuinfo`` (e.g. ``"vendor_id"``, ``"model name"``); ``None``
    where there is no such file or line (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """``"intel"``, ``"amd"`` or ``"other"``: the CPU's vendor, from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    text = cpuinfo("vendor_id")
    if not text:
        import platform

        text = platform.processor()
    text = text.lower()
    if "genuineintel" in text or "intel" in text:
        return "intel"
    if "authenticamd" in text or "amd" in text:
        return "amd"
    return "other"


#: The library of CPU products other than :func:`matmul_nt`'s, ``"torch"`` or ``"numpy"``; ``None`` = settled on first use.
_BLAS_BACKEND: str | None = None


def blas_backend() -> str:
    """``"torch"`` (MKL) on Intel CPUs when torch has MKL, ``"numpy"`` (OpenBLAS) elsewhere: the library of
    :func:`matmul`, :func:`matmul64`, :func:`gram64` and :func:`matmul64_rows` on the CPU.

    Measured at the benchmark's shapes with one thread: on the 2-core AMD EPYC
    machine numpy was about 3 times faster than torch for the float64
    products and about 1.2 times for the float32 ones; on the 2-core Intel
    Xeon (AVX-512) machine torch was faster for both (the ``(40, 2048, 32) @
    (40, 32, 32)`` heads 3.0 ms against 5.9 ms, the ``(40, 32, 2048)``
    float64 Grams 1.1 to 1.7 times).
    """
    global _BLAS_BACKEND
    if _BLAS_BACKEND is None:
        mkl = bool(getattr(torch.backends, "mkl", None) and torch.backends.mkl.is_available())
        _BLAS_BACKEND = "torch" if mkl and cpu_vendor() == "intel" else "numpy"
    return _BLAS_BACKEND


def empty_buffer(shape: Sequence[int], dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
    """An uninitialised tensor for a large temporary or result; on the CPU, float32/float64 memory comes from numpy.

    numpy asks the kernel for transparent huge pages on large arrays
    (``madvise``) and torch's CPU allocator does not: on the benchmark machine
    (a VM with THP in ``madvise`` mode) first touching fresh 4 KiB pages cost
    about 0.4 ms per MiB, more than the arithmetic done on them. The tensor
    shares the numpy array's memory (``torch.from_numpy``) and behaves like
    any other CPU tensor. Other dtypes and devices use ``torch.empty``.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cpu" and dtype in _NUMPY_DTYPES:
        import numpy as np

        return torch.from_numpy(np.empty(tuple(int(x) for x in shape), dtype=_NUMPY_DTYPES[dtype]))
    return torch.empty(tuple(int(x) for x in shape), dtype=dtype, device=device)


def to_float64(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 (``x`` itself when it already is; detached); a fresh copy in :func:`empty_buffer` memory otherwise."""
    x = x.detach()
    if x.dtype == torch.float64:
        return x
    out = empty_buffer(x.shape, torch.float64, x.device)
    return out.copy_(x)


def _cpu(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" for t in tensors)


def _product(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None, library: str | None = None) -> torch.Tensor:
    """``a @ b`` (batched like ``torch.matmul``) of CPU tensors of one numpy dtype, into ``out`` if given, by
    ``library`` (``"torch"`` or ``"numpy"``; default :func:`blas_backend`)."""
    if (library or blas_backend()) == "torch":
        if out is None and a.ndim >= 2 and b.ndim >= 2:  # a result in empty_buffer (huge-page) memory
            batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            out = empty_buffer((*batch, a.shape[-2], b.shape[-1]), a.dtype)
        return torch.matmul(a, b, out=out) if out is not None else torch.matmul(a, b)
    import numpy as np

    if out is not None:
        np.matmul(a.numpy(), b.numpy(), out=out.numpy())
        return out
    return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))


def matmul64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in float64 (batched like ``torch.matmul``; no autograd); pass float64 inputs to avoid conversions.

    On the CPU by :func:`blas_backend` (numpy's BLAS except on Intel CPUs,
    where torch's MKL is faster); other devices use ``torch.matmul``.
    """
    a, b = to_float64(a), to_float64(b)
    if _cpu(a, b):
        return _product(a, b)
    return a @ b


#: Bytes of float64 scratch that :func:`gram64` and :func:`matmul64_rows` fill at a time (about an L2 cache).
_CHUNK_BYTES = 2 << 20


def _float64_blocks(src: torch.Tensor):
    """``(i, j, src[i:j] as float64)`` over the leading axis of the CPU tensor ``src``, in blocks of about
    :data:`_CHUNK_BYTES`, converted into one reused float64 buffer (each block is overwritten by the next)."""
    n = int(src.shape[0])
    row = 8
    for x in src.shape[1:]:
        row *= int(x)
    step = max(1, _CHUNK_BYTES // max(row, 1))
    buf = empty_buffer((min(step, n), *src.shape[1:]), torch.float64)
    for i in range(0, n, step):
        j = min(n, i + step)
        chunk = buf[: j - i]
        chunk.copy_(src[i:j])
        yield i, j, chunk


def gram64(x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """Batched float64 Grams of ``x`` ``(N, a, b)``: ``x_i x_i^T`` ``(N, a, a)``, or ``x_i^T x_i`` ``(N, b, b)`` with ``transpose``.

    The products of ``matmul64(x, x.mT)`` (``matmul64(x.mT, x)``), by
    :func:`blas_backend`; on the CPU a float32 ``x`` is converted a few
    matrices at a time into one small float64 buffer rather than copied to
    float64 as a whole (about 1.3 times faster for the ``(40, 32, 2048)``
    stacks of the benchmark on the AMD machine, and no large temporary).
    """
    x = x.detach()
    if x.ndim != 3 or x.device.type != "cpu" or x.dtype not in _NUMPY_DTYPES or x.dtype == torch.float64:
        return matmul64(x.mT, x) if transpose else matmul64(x, x.mT)
    N, a, b = (int(t) for t in x.shape)
    size = b if transpose else a
    out = empty_buffer((N, size, size), torch.float64)
    for i, j, chunk in _float64_blocks(x):
        if transpose:
            _product(chunk.mT, chunk, out=out[i:j])
        else:
            _product(chunk, chunk.mT, out=out[i:j])
    return out


def matmul64_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in float64 for 2-D ``a`` ``(n, k)`` and ``b`` ``(k, m)``: :func:`matmul64`'s product.

    On the CPU a float32 ``a`` is converted a block of rows at a time into one
    small float64 buffer (as in :func:`gram64`) instead of copied as a whole.
    """
    a = a.detach()
    if (a.ndim != 2 or b.ndim != 2 or a.device.type != "cpu" or b.device.type != "cpu"
            or a.dtype not in _NUMPY_DTYPES or a.dtype == torch.float64):
        return matmul64(a, b)
    b64 = to_float64(b)
    if blas_backend() == "torch":
        b64 = b64.contiguous()
    out = empty_buffer((int(a.shape[0]), int(b64.shape[1])), torch.float64)
    for i, j, chunk in _float64_blocks(a):
        _product(chunk, b64, out=out[i:j])
    return out


def _transposes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether 2-D ``b`` is ``a.T`` (the same memory, strides swapped): ``a @ b`` is then a symmetric Gram."""
    return (a.ndim == 2 and b.ndim == 2 and a.data_ptr() == b.data_ptr() and tuple(b.shape) == tuple(a.shape)[::-1]
            and tuple(b.stride()) == tuple(a.stride())[::-1])


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D (or batched) tensors of one float dtype (no autograd); on the CPU by :func:`blas_backend`.

    The same product as ``torch.matmul`` (which it is on Intel CPUs, other
    devices, other dtypes and tensors that require grad); elsewhere numpy's
    BLAS, whose float32 skinny products were about 1.2 times faster than
    torch's on the AMD benchmark machine. A Gram ``x @ x.T`` or ``x.T @ x``
    goes to numpy on every CPU: numpy makes it a symmetric rank-k update, half
    the work (``(1280, 2048) @ (2048, 1280)``: 52 ms against torch's 71 ms on
    the Intel machine).
    """
    if (a.device.type == "cpu" and b.device.type == "cpu" and a.dtype == b.dtype and a.dtype in _NUMPY_DTYPES
            and not (a.requires_grad or b.requires_grad)):
        return _product(a.detach(), b.detach(), library="numpy" if _transposes(a, b) else None)
    return a @ b


#: Whether oneDNN's inner product (``torch.ops.mkldnn._linear_pointwise``) works here; settled on first use.
_ONEDNN_NT: bool | None = None

#: Smallest product (multiply-adds) that :func:`matmul_nt` sends to oneDNN; below it the call overhead dominates.
_ONEDNN_MIN_WORK = 1 << 20


def _onednn_nt_available() -> bool:
    """Whether oneDNN's float32 inner product may be used: it runs on this build with float32 accuracy (checked once,
    on operands that bfloat16 would round) and oneDNN is not set to reduced-precision float32 products now."""
    global _ONEDNN_NT
    if _ONEDNN_NT is None:
        ok = False
        try:
            if torch.backends.mkldnn.is_available():
                x = 1 + torch.arange(6, dtype=torch.float64).reshape(2, 3) * 2.0**-20
                w = 1 - torch.arange(12, dtype=torch.float64).reshape(4, 3) * 2.0**-20
                out = torch.ops.mkldnn._linear_pointwise(x.float(), w.float(), None, "none", [], "")
                ok = out.shape == (2, 4) and bool((out.double() - x @ w.T).abs().max() <= 1e-6)
        except Exception:  # no oneDNN, or the private op changed
            ok = False
        _ONEDNN_NT = ok
    if not _ONEDNN_NT:
        return False
    try:
        return getattr(torch.backends.mkldnn.matmul, "fp32_precision", "none") in ("none", "ieee")
    except Exception:
        return False


def _row_or_column_major(t: torch.Tensor) -> bool:
    return t.is_contiguous() or t.T.is_contiguous()


def _onednn_eligible(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype == torch.float32 and b.dtype == torch.float32 and _cpu(a, b)
            and a.ndim == 2 and b.ndim == 2 and not (a.requires_grad or b.requires_grad)
            and a.shape[0] * a.shape[1] * b.shape[0] >= _ONEDNN_MIN_WORK and a.shape[1] == b.shape[1]
            and _row_or_column_major(b) and _onednn_nt_available())


def matmul_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for 2-D tensors ``a`` ``(m, k)``, ``b`` ``(n, k)`` of one float dtype (no autograd); a fresh ``(m, n)`` tensor.

    The same product as :func:`matmul`; large float32 products on the CPU go
    through oneDNN's inner product (the kernel of ``torch.nn.functional.linear``
    for oneDNN weights), which runs AVX-512 code where numpy's OpenBLAS picks
    its AVX2 kernels: the skinny ``(p, d) x (d, n)`` products of
    :func:`~.lowrank.factored_top_eigen` took about half the time on the AMD
    benchmark machine. Ordinary float32 arithmetic (no reduced precision);
    only the order of the sums differs. Other dtypes, devices, small or
    oddly strided operands, and builds without oneDNN use :func:`matmul`.
    """
    if _onednn_eligible(a, b):
        try:
            return torch.ops.mkldnn._linear_pointwise(a.contiguous(), b, None, "none", [], "")
        except RuntimeError:  # a layout oneDNN declines: the plain product below
            pass
    return matmul(a, b.T)


def cpu_backends() -> dict[str, str]:
    """The CPU libraries the products here use on this machine (for benchmark records):
    ``{"vendor": ..., "blas": blas_backend(), "float32_nt": "onednn" or the BLAS one}``."""
    return {
        "vendor": cpu_vendor(),
        "blas": blas_backend(),
        "float32_nt": "onednn" if _onednn_nt_available() else blas_backend(),
    }
