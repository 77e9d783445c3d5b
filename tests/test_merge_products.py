"""The solvers' float64 products (hydralib.merge.products) against a float64 reference, and no CPU-vendor
routing or private torch op anywhere in the library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from hydralib.merge.products import gram64, matmul64, to_float64

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1] / "hydralib"


def _close(got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    assert got.dtype == F64 and got.shape == want.shape
    assert float((got - want).abs().max()) <= tol * max(float(want.abs().max()), 1e-300)


def test_float64_conversion():
    a = torch.randn(4, 6, 50, generator=torch.Generator().manual_seed(3))
    x64 = to_float64(a)
    assert x64.dtype == F64 and torch.equal(x64, a.double())
    assert to_float64(x64).data_ptr() == x64.data_ptr()  # float64 input: no copy
    assert not to_float64(torch.randn(3, 3, dtype=F64, requires_grad=True)).requires_grad  # detached


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float64_products_match_a_float64_reference(dtype):
    """Whatever the inputs' dtype, the products are float64 and accurate to float64 rounding."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(4, 6, 50, generator=g, dtype=F64).to(dtype)
    b = torch.randn(4, 50, 7, generator=g, dtype=F64).to(dtype)
    A = torch.randn(300, 512, generator=g, dtype=F64).to(dtype)
    X = torch.randn(40, 512, generator=g, dtype=F64).to(dtype)
    a64, b64, A64, X64 = a.double(), b.double(), A.double(), X.double()
    for got, want in ((matmul64(a, b), a64 @ b64), (gram64(a), a64 @ a64.mT), (gram64(a, transpose=True), a64.mT @ a64),
                      (matmul64(A, X.T), A64 @ X64.T), (matmul64(A[:, 10:300], X[:, 10:300].T), A64[:, 10:300] @ X64[:, 10:300].T)):
        _close(got, want, 1e-12)


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_no_private_torch_ops_and_no_cpu_vendor_routing():
    """No module calls a private torch op (``torch.ops.*``, ``torch._*``) or reads ``/proc/cpuinfo`` to choose a
    code path (only the benchmark records the CPU model); the merge package computes with torch alone."""
    private, cpuinfo, numpy_in_products = [], [], []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        name = path.relative_to(ROOT.parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                dotted = _dotted(node)
                if dotted.startswith("torch.ops") or (dotted.startswith("torch.") and dotted.split(".")[1].startswith("_")
                                                      and dotted != "torch.__version__"):
                    private.append(f"{name}: {dotted}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "/proc/cpuinfo" in node.value:
                cpuinfo.append(name)
        if name == "hydralib/merge/products.py":
            numpy_in_products = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                                 if a.name.split(".")[0] != "torch"]
    assert not private, private
    assert set(cpuinfo) <= {"hydralib/bench/machine.py"}, cpuinfo
    assert not numpy_in_products
