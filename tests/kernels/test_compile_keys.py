"""No kernel compiles in the middle of a run: what a GPU launch compiles a variant for (its constexprs, the
integers of value 1 and the arguments divisible by 16, less those ``do_not_specialize`` names; see
``support.gpu_compile.specialised``) must not depend on the step's token count, beyond the token counts the
engine's warm-up meets (a long prompt chunk, a 3-token mixed step, many decodes) and the decode steps its CUDA
graphs capture.

The H200 found the breach this guards against (2026-12-03): the gated activation took its rows a program as a
constexpr of the token count, and W3's first 8,192-token step compiled a new variant inside its timed run
(W3 fp8 at 1.33x bf16 instead of 1.48x). Here each op runs under the interpreter at several token counts, its
launches recorded, and the compile keys compared."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from support.gpu_compile import launch_record  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from mii_core.model.quantization import quantize_weight  # noqa: E402
from mii_kernels.triton import activations, fp8_activation, norms, quant_linear, rotary  # noqa: E402
from mii_kernels.triton import linear as triton_linear  # noqa: E402
from test_triton_ops import randn, strided_rows  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's launches are recorded on CPU")

# Token counts of prompt steps: divisible by 16 or not, below and above the 512 and 1,024 rows that tile
# choices once turned on. The GEMVs (steps of up to 8 tokens) have a tile of their own for 1 and for 2 tokens
# (decode batches, compiled when the CUDA graphs are captured) and one for 3 to 8, which the warm-up's
# 3-token step compiles: 3, 5 and 8 tokens must share it.
PROMPT_TOKENS = (24, 515, 1040)
GEMV_TOKENS = (3, 5, 8)
WIDTH = 64


def compile_keys(run_op) -> set[str]:
    """The compile keys of every kernel launch ``run_op()`` makes. The launches are recorded, not run: what a
    launch compiles is decided by its arguments, and interpreting kernels over 1,040 rows took minutes."""
    keys, run = set(), InterpretedFunction.run  # put back afterwards

    def recording(self, *args, grid, warmup, **kwargs):
        record = launch_record(self.fn, args, kwargs)
        unspecialised = set(self.kwargs.get("do_not_specialize") or ())
        keys.add(json.dumps({"kernel": record["name"], "constexprs": record["constexprs"],
                             "options": record["options"],
                             "aligned": sorted(set(record["aligned"]) - unspecialised),
                             "ones": sorted(set(record["ones"]) - unspecialised)}, sort_keys=True, default=str))

    InterpretedFunction.run = recording
    try:
        run_op()
    finally:
        InterpretedFunction.run = run
    return keys


def norm_ops(tokens):
    x, residual, weight = strided_rows(tokens, WIDTH, torch.float16, 1), randn(tokens, WIDTH, dtype=torch.float16), \
        randn(WIDTH, dtype=torch.float16)
    amax = torch.zeros(())
    norms.rms_norm(x, weight, 1e-5, residual, amax)
    norms.rms_norm(x, weight, 1e-5)
    norms.layer_norm(x, weight, weight, 1e-5, residual, amax)


def gated_ops(tokens):
    x = strided_rows(tokens, 2 * WIDTH, torch.float16, 2)
    activations.gated_activation(x, "silu", torch.zeros(()))
    activations.gated_activation(x, "gelu_tanh")


def fp8_quantize_ops(tokens):
    x = strided_rows(tokens, WIDTH, torch.float16, 3)
    fp8_activation.quantize_per_tensor(x)
    fp8_activation.quantize_with_amax(x, x.abs().amax().float())


def rotary_ops(tokens):
    q_heads, kv_heads, dim, block_size = 4, 2, 16, 16
    qkv = randn(tokens, (q_heads + 2 * kv_heads) * dim, dtype=torch.float16, seed=4)
    q, k, v = qkv.split([q_heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    q, k, v = q.view(tokens, q_heads, dim), k.view(tokens, kv_heads, dim), v.view(tokens, kv_heads, dim)
    cos, sin = randn(tokens, dim, dtype=torch.float16, seed=5), randn(tokens, dim, dtype=torch.float16, seed=6)
    blocks = tokens // block_size + 2
    k_cache = torch.zeros(blocks, block_size, kv_heads, dim, dtype=torch.float16)
    rotary.rotary_write_kv(q, k, v, cos, sin, dim, k_cache, torch.zeros_like(k_cache), torch.arange(tokens))


def gemv_ops(tokens):
    x = strided_rows(tokens, 2 * WIDTH, torch.float16, 7)
    weight = randn(48, WIDTH, dtype=torch.float16, seed=8)
    triton_linear.linear(x[:, :WIDTH], weight, None)
    triton_linear.gated_linear(x, weight, None, "silu")
    op = quant_linear.TritonQuantLinear()
    for mode in ("fp8", "wf6af16"):
        op(x[:, :WIDTH], quantize_weight(randn(48, WIDTH, seed=9), mode), None)


@pytest.mark.parametrize("ops, token_counts", [(norm_ops, PROMPT_TOKENS), (gated_ops, PROMPT_TOKENS),
                                               (fp8_quantize_ops, PROMPT_TOKENS), (rotary_ops, PROMPT_TOKENS),
                                               (gemv_ops, GEMV_TOKENS)], ids=lambda v: getattr(v, "__name__", ""))
def test_a_step_compiles_what_any_other_step_compiled(ops, token_counts):
    keys = {tokens: compile_keys(lambda: ops(tokens)) for tokens in token_counts}
    first = keys[token_counts[0]]
    assert first, "no kernel launch was recorded"
    for tokens, later in keys.items():
        assert later == first, (f"{ops.__name__} at {tokens} tokens compiles {sorted(later - first)} "
                                f"that {token_counts[0]} tokens did not")
