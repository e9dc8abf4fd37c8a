"""Programmatic dependent launch (``mii_kernels.triton.pdl``): switched by MII_TRITON_PDL, never on the CPU,
and the rule that keeps it correct: every kernel that may be launched early waits for the kernels before it
first thing, and every launch that passes ``PDL`` launches with the same flag. A kernel that loaded before
its wait would read a previous kernel's output before it is written; one launched early without waiting
would let the chain after it run ahead. On a GPU of compute capability 9.0 or newer a chain of norms and
GEMVs replayed from a CUDA graph gives the same bits launched early as launched one after another."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from mii_kernels.triton import linear as triton_linear  # noqa: E402
from mii_kernels.triton import norms, pdl  # noqa: E402
from test_triton_ops import CUDA, randn  # noqa: E402

KERNEL_SOURCES = sorted(Path(pdl.__file__).parent.glob("*.py"))


def _kernels_taking_pdl(tree: ast.Module) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            and any(arg.arg == "PDL" for arg in node.args.args) and node.name != "pdl_wait"]


def _first_statement(function: ast.FunctionDef) -> ast.stmt:
    body = function.body
    has_docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    return body[1] if has_docstring else body[0]


def test_every_kernel_taking_pdl_waits_first_thing():
    kernels = []
    for source in KERNEL_SOURCES:
        for kernel in _kernels_taking_pdl(ast.parse(source.read_text())):
            kernels.append(kernel.name)
            first = ast.unparse(_first_statement(kernel))
            assert first == "pdl_wait(PDL)", f"{source.name}: {kernel.name} begins with {first!r}, not the wait"
    # the kernels of a decode step (GEMV, norm, rotary + KV write, attention) and of W1's FP8 path among them
    assert {"_gemv_kernel", "_rms_kernel", "_rotary_write_kernel", "_decode_kernel", "_reduce_kernel",
            "_quantize_kernel", "_gated_kernel"} <= set(kernels)


def test_every_launch_of_a_kernel_taking_pdl_passes_pdl_launch():
    kernels = {kernel.name for source in KERNEL_SOURCES
               for kernel in _kernels_taking_pdl(ast.parse(source.read_text()))}
    launches = 0
    for source in KERNEL_SOURCES:
        for call in ast.walk(ast.parse(source.read_text())):
            # kernel[grid](...): a call of a subscript of the kernel's name
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Subscript)
                    and ast.unparse(call.func.value) in kernels):
                continue
            launches += 1
            where = f"{source.name}:{call.lineno}"
            spread = [ast.unparse(kw.value.func) for kw in call.keywords
                      if kw.arg is None and isinstance(kw.value, ast.Call)]
            assert "pdl_launch" in spread, f"{where}: {ast.unparse(call.func)} launched without **pdl_launch(...)"
            assert all(kw.arg != "PDL" for kw in call.keywords), f"{where}: PDL passed apart from pdl_launch"
    assert launches >= 10


def test_the_switch_takes_0_or_1_and_names_itself(monkeypatch):
    monkeypatch.setenv(pdl.PDL_ENV, "yes")
    with pytest.raises(ValueError, match="MII_TRITON_PDL must be 0 or 1"):
        pdl.launches_early(torch.zeros(1))


def test_never_on_the_cpu_and_no_launch_option_when_off(monkeypatch):
    monkeypatch.setenv(pdl.PDL_ENV, "1")
    assert not pdl.launches_early(torch.zeros(1))
    assert pdl.pdl_launch(torch.zeros(1)) == {"PDL": False}  # no launch_pdl keyword for an older Triton


def _norm_gemv_chain(x, residual, norm_weights, weights):
    """Layer after layer: the residual sum and its norm, then a GEMV whose output is the next layer's x."""
    for norm_weight, weight in zip(norm_weights, weights):
        normed, residual = norms.rms_norm(x, norm_weight, 1e-5, residual=residual)
        x = triton_linear.linear(normed, weight)
    return x, residual


def _replayed_chain(monkeypatch, early: str, inputs):
    monkeypatch.setenv(pdl.PDL_ENV, early)
    x, residual, norm_weights, weights = inputs
    static_x, static_residual = x.clone(), residual.clone()
    _norm_gemv_chain(static_x, static_residual, norm_weights, weights)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, summed = _norm_gemv_chain(static_x, static_residual, norm_weights, weights)
    graph.replay()
    torch.cuda.synchronize()
    return out.clone(), summed.clone()


@pytest.mark.skipif(not CUDA or torch.cuda.get_device_capability() < pdl.PDL_CAPABILITY,
                    reason="programmatic dependent launch needs a GPU of compute capability 9.0 or newer")
def test_a_chain_launched_early_gives_the_bits_of_one_launched_in_turn(monkeypatch):
    layers, hidden = 24, 4096
    inputs = (randn(1, hidden, dtype=torch.bfloat16, seed=1), randn(1, hidden, dtype=torch.bfloat16, seed=2),
              [1 + 0.1 * randn(hidden, dtype=torch.bfloat16, seed=10 + i) for i in range(layers)],
              [randn(hidden, hidden, dtype=torch.bfloat16, scale=hidden ** -0.5, seed=40 + i) for i in range(layers)])
    in_turn = _replayed_chain(monkeypatch, "0", inputs)
    early = _replayed_chain(monkeypatch, "1", inputs)
    assert torch.isfinite(in_turn[0]).all() and in_turn[0].abs().max() > 0
    for ours, theirs in zip(early, in_turn):
        assert torch.equal(ours, theirs)
