"""The FP6 GEMV's inline-PTX decode (``quant_decode.fp6_quarter_ptx``, a candidate behind
``MII_TRITON_FP6_PTX=1``): four codes an instance, two bytes spread into the halves of a register so that each
shift and mask places the bits of two codes at once.

The interpreter runs no PTX, so on the CPU the very PTX text the kernel is given is executed by a small model
of its four instructions (``prmt``, ``shl``, ``and``, ``or``, as the PTX ISA defines them) over every pair of
nibble-plane and crumb-plane bytes, and compared with the codes' float16 bits worked out from the e3m2 format
by hand. The sm_90 compile check (``test_compiles_for_gpu.py``, ``FP6_PTX`` a GPU-only flag) has ptxas accept
it; on a GPU the GEMV with it on is held to the reference below."""
from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from mii_kernels.triton import linear as triton_linear  # noqa: E402
from mii_kernels.triton.quant_decode import fp6_quarter_ptx  # noqa: E402

MASK = 0xFFFFFFFF


def run_ptx(text: str, inputs: dict[str, int]) -> dict[str, int]:
    """The PTX's registers after running it (32-bit, ``prmt`` in its default mode)."""
    regs = dict(inputs)

    def value(operand: str) -> int:
        operand = operand.strip()
        return int(operand, 0) if re.fullmatch(r"(0x[0-9A-Fa-f]+|\d+)", operand) else regs[operand]

    for line in text.splitlines():
        match = re.fullmatch(r"\s*(\w+)\.b32 ([^;]+);", line)
        if not match:
            assert line.strip() in ("{", "}") or line.strip().startswith(".reg"), line
            continue
        op, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
        dest, sources = args[0], [value(a) for a in args[1:]]
        if op == "prmt":
            a, b, selector = sources
            source_bytes = [(a >> 8 * i) & 0xFF for i in range(4)] + [(b >> 8 * i) & 0xFF for i in range(4)]
            picks = [(selector >> 4 * i) & 0xF for i in range(4)]
            assert all(pick < 8 for pick in picks), "sign-replicating selectors are not modelled"
            regs[dest] = sum(source_bytes[pick] << 8 * i for i, pick in enumerate(picks))
        elif op == "shl":
            regs[dest] = (sources[0] << sources[1]) & MASK
        elif op == "and":
            regs[dest] = sources[0] & sources[1]
        elif op == "or":
            regs[dest] = sources[0] | sources[1]
        else:
            raise AssertionError(f"an instruction the model does not know: {line}")
    return regs


def by_hand(nibble_byte: int, crumb_byte: int, quarter: int) -> int:
    """float16 bits of value·2^-12 for the e3m2 code ``s eee mm``: s to bit 15, eee to 10-12, mm to 8-9."""
    nibble = (nibble_byte >> (4 * (quarter % 2))) & 0xF
    mantissa = (crumb_byte >> (2 * quarter)) & 0x3
    return ((nibble >> 3) << 15) | ((nibble & 0x7) << 10) | (mantissa << 8)


@pytest.mark.parametrize("quarter", range(4))
def test_the_ptx_decodes_every_byte_pair_as_the_format_says(quarter):
    text = fp6_quarter_ptx(quarter)
    for nibble_byte in range(256):
        for crumb_lane in range(4):  # each byte value at every lane of the four
            nibbles = [(nibble_byte + 37 * lane) & 0xFF for lane in range(4)]
            nibbles[crumb_lane] = nibble_byte
            crumbs = [(nibble_byte * 7 + 11 * lane) & 0xFF for lane in range(4)]
            regs = run_ptx(text, {"$2": sum(b << 8 * i for i, b in enumerate(nibbles)),
                                  "$3": sum(c << 8 * i for i, c in enumerate(crumbs))})
            halves = [regs["$0"] & 0xFFFF, regs["$0"] >> 16, regs["$1"] & 0xFFFF, regs["$1"] >> 16]
            assert halves == [by_hand(nibbles[i], crumbs[i], quarter) for i in range(4)]


def test_the_hand_rule_is_the_e3m2_value():
    """``by_hand``'s float16 times 2^12 is the e3m2 value (bias 3; subnormals 0.mm · 2^-2)."""
    for code in range(64):
        sign, exponent, mantissa = code >> 5, (code >> 2) & 0x7, code & 0x3
        value = (mantissa / 4) * 2.0 ** -2 if exponent == 0 else (1 + mantissa / 4) * 2.0 ** (exponent - 3)
        nibble_byte, crumb_byte = (sign << 3) | exponent, mantissa
        bits = torch.tensor([by_hand(nibble_byte, crumb_byte, 0)], dtype=torch.int32).to(torch.int16)
        decoded = bits.view(torch.float16).float().item() * 2.0 ** 12
        assert decoded == (-value if sign else value)


def test_the_switch_is_read_from_the_environment_when_the_op_is_made(monkeypatch):
    from mii_kernels.triton.quant_linear import TritonQuantLinear

    monkeypatch.delenv(triton_linear.FP6_PTX_ENV, raising=False)
    assert TritonQuantLinear().fp6_ptx is True  # on by default (timed faster on the H200)
    monkeypatch.setenv(triton_linear.FP6_PTX_ENV, "0")
    assert TritonQuantLinear().fp6_ptx is False
    monkeypatch.setenv(triton_linear.FP6_PTX_ENV, "yes")
    with pytest.raises(ValueError, match="MII_TRITON_FP6_PTX must be 0 or 1"):
        TritonQuantLinear()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="inline PTX runs on an NVIDIA GPU only")
@pytest.mark.parametrize("tokens", [1, 2, 8])
def test_the_fp6_gemv_with_the_ptx_decode_matches_the_reference(monkeypatch, tokens):
    """Llama-3-8B's gate/up projection (4,096 → 28,672) in FP6, bf16: the GEMV with the PTX decode against the
    same GEMV without it (both decode exactly; the sums run alike), bit for bit."""
    from mii_core.model.quantization import quantize_weight
    from mii_kernels.triton.quant_linear import TritonQuantLinear

    gen = torch.Generator(device="cuda").manual_seed(tokens)
    x = torch.randn(tokens, 4096, generator=gen, device="cuda").to(torch.bfloat16)
    weight = quantize_weight(torch.randn(28672, 4096, generator=gen, device="cuda") * 4096 ** -0.5, "wf6af16")
    monkeypatch.setenv(triton_linear.FP6_PTX_ENV, "0")
    plain = TritonQuantLinear()(x, weight, None)
    monkeypatch.setenv(triton_linear.FP6_PTX_ENV, "1")
    assert torch.equal(TritonQuantLinear()(x, weight, None), plain)
