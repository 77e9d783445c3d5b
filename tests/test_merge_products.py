"""The products of the factored solvers (hydralib.merge.products): every backend computes the same product."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from hydralib.merge.products import (
    cpu_backends,
    cpuinfo,
    cpu_vendor,
    empty_buffer,
    gram64,
    matmul,
    matmul64,
    matmul64_rows,
    matmul_nt,
    to_float64,
)

F64 = torch.float64
products = importlib.import_module("hydralib.merge.products")


@pytest.fixture(params=["numpy", "torch"])
def blas(request, monkeypatch):
    """Run a test once with each library for the CPU products (numpy and torch)."""
    monkeypatch.setattr(products, "_BLAS_BACKEND", request.param)
    return request.param


def test_numpy_backed_buffers_and_products_match_torch(blas):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 6, 50, generator=g)
    b = torch.randn(4, 50, 7, generator=g)
    buf = empty_buffer((4, 6, 50), torch.float32)
    assert buf.shape == (4, 6, 50) and buf.dtype == torch.float32 and buf.device.type == "cpu"
    assert empty_buffer((3,), torch.int64).dtype == torch.int64  # other dtypes: torch.empty
    x64 = to_float64(a)
    assert x64.dtype == F64 and torch.equal(x64, a.double()) and to_float64(x64).data_ptr() == x64.data_ptr()
    torch.testing.assert_close(matmul64(a, b), a.double() @ b.double(), rtol=1e-12, atol=1e-12)
    assert matmul64(a, b).dtype == F64
    torch.testing.assert_close(matmul(a, b), a @ b)
    flat = a.reshape(24, 50)
    torch.testing.assert_close(matmul(flat, flat.T), flat @ flat.T)  # the symmetric (syrk) cases
    torch.testing.assert_close(matmul(flat.T, flat), flat.T @ flat)
    assert products._transposes(flat, flat.T) and products._transposes(flat.T, flat)
    assert not products._transposes(flat, flat.clone().T) and not products._transposes(flat[:, :24], flat[:, :24])
    w = torch.randn(3, 3, requires_grad=True)
    assert matmul(w, w).requires_grad  # autograd goes through torch


def test_matmul_nt_is_a_times_b_transposed_on_every_path(monkeypatch):
    g = torch.Generator().manual_seed(5)
    A = torch.randn(300, 512, generator=g)
    X = torch.randn(40, 512, generator=g)
    DY = torch.randn(300, 64, generator=g)
    cases = [
        (X, A),  # row-major weight (oneDNN where available)
        (DY[:, 10:50].T, A.T),  # strided input, column-major weight
        (X[:, :400], A[:, :400]),  # a column slice as weight: the plain product
        (X[:3, :5], A[:4, :5]),  # too small for oneDNN
        (X.double(), A.double()),  # float64: numpy
    ]
    for a, b in cases:
        out = matmul_nt(a, b)
        ref = a.double() @ b.double().T
        assert out.shape == ref.shape and out.dtype == a.dtype
        tol = 1e-12 if a.dtype == F64 else 1e-5
        assert float((out.double() - ref).abs().max()) <= tol * float(ref.abs().max())
        with monkeypatch.context() as m:  # without oneDNN: exactly matmul(a, b.T)
            m.setattr(products, "_ONEDNN_NT", False)
            assert torch.equal(matmul_nt(a, b), matmul(a, b.T))


def test_chunked_float64_products_equal_matmul64(monkeypatch, blas):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(7, 5, 33, generator=g)  # float32
    v = torch.randn(4, 33, generator=g)
    flat = x.reshape(35, 33)
    for chunk in (1, 3 * 5 * 33 * 8, 1 << 21):  # one matrix (row) at a time, 3 with a shorter last chunk, all at once
        monkeypatch.setattr(products, "_CHUNK_BYTES", chunk)
        for got, ref in ((gram64(x), matmul64(x, x.mT)), (gram64(x, transpose=True), matmul64(x.mT, x)),
                         (matmul64_rows(flat, v.T), matmul64(flat, v.T))):
            assert got.dtype == F64 and got.shape == ref.shape
            torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-13)
    x64 = x.double()
    assert torch.equal(gram64(x64), matmul64(x64, x64.mT)) and torch.equal(matmul64_rows(flat.double(), v.T), matmul64(flat, v.T))


def test_the_two_blas_backends_agree_to_rounding(monkeypatch):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 8, 200, generator=g)
    results = {}
    for backend in ("numpy", "torch"):
        monkeypatch.setattr(products, "_BLAS_BACKEND", backend)
        results[backend] = (gram64(x), gram64(x, transpose=True), matmul64_rows(x[0], x[1].T), matmul64(x, x.mT),
                            matmul(x, x.mT))
    ref = (x.double() @ x.double().mT, x.double().mT @ x.double(), x[0].double() @ x[1].double().T, x.double() @ x.double().mT,
           x.double() @ x.double().mT)
    for got_numpy, got_torch, want in zip(results["numpy"], results["torch"], ref):
        assert got_numpy.dtype == got_torch.dtype and got_numpy.shape == got_torch.shape == want.shape
        tol = 1e-13 if got_numpy.dtype == F64 else 1e-5
        torch.testing.assert_close(got_numpy.double(), want, rtol=tol, atol=tol * float(want.abs().max()))
        torch.testing.assert_close(got_torch.double(), want, rtol=tol, atol=tol * float(want.abs().max()))


def test_backend_choices_follow_the_cpu_vendor(monkeypatch):
    assert cpu_vendor() in ("intel", "amd", "other")
    assert cpuinfo("no such field") is None
    if Path("/proc/cpuinfo").is_file():
        assert cpuinfo("processor") == "0" and cpuinfo("vendor_id")
    for vendor, expected in (("intel", "torch" if torch.backends.mkl.is_available() else "numpy"), ("amd", "numpy"),
                             ("other", "numpy")):
        monkeypatch.setattr(products, "cpu_vendor", lambda v=vendor: v)
        monkeypatch.setattr(products, "_BLAS_BACKEND", None)
        assert cpu_backends()["blas"] == expected and cpu_backends()["vendor"] == vendor
        assert cpu_backends()["float32_nt"] in ("onednn", expected)
