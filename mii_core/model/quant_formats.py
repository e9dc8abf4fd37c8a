"""The number formats of weight quantization, in plain PyTorch: FP8 e4m3 and FP6 e3m2 codes, their scales
and the packing of FP6 codes. Load-time quantization and every kernel's reference read these.

FP8 e4m3 (``torch.float8_e4m3fn``): largest finite value 448. FP6 e3m2 (FP6-LLM's format): 1 sign bit,
3 exponent bits (bias 3, no infinities or NaN), 2 mantissa bits; normal values ±2^(e-3)·(1 + m/4) for
e = 1..7, subnormal ±2^-2·(m/4); largest 28, smallest nonzero 0.0625. A code is the 6-bit integer
``sign << 5 | e << 2 | m``; since the magnitude grows with the low 5 bits, a code is found by a sorted
search. Four codes pack into three bytes, little-endian: ``c0 | c1 << 6 | c2 << 12 | c3 << 18``; a row of K
values takes 3·ceil(K/4) bytes (the last group padded with zero codes). This is FP6-LLM's number format,
not its tensor-core bit interleaving: our kernels unpack rows in registers.
"""
from __future__ import annotations

import torch

FP8_MAX = 448.0
FP6_MAX = 28.0


def e3m2_magnitudes(device=None) -> torch.Tensor:
    """The 32 non-negative e3m2 values in code order (ascending), float32."""
    codes = torch.arange(32)
    exponent, mantissa = codes // 4, (codes % 4).float()
    normal = torch.exp2(exponent.float() - 3) * (1 + mantissa / 4)
    subnormal = 0.25 * mantissa / 4
    return torch.where(exponent > 0, normal, subnormal).to(device)


def e3m2_values(device=None) -> torch.Tensor:
    """The value of each of the 64 codes (index = code), float32."""
    magnitudes = e3m2_magnitudes(device)
    return torch.cat([magnitudes, -magnitudes])


def round_to_e3m2(x: torch.Tensor) -> torch.Tensor:
    """x (float32, already scaled) rounded to the nearest e3m2 value, ties to even, saturating at ±28."""
    x = x.clamp(-FP6_MAX, FP6_MAX)
    _mantissa, exponent = torch.frexp(x)  # |x| = m · 2^exponent, m in [0.5, 1): binade 2^(exponent-1)
    # spacing is 2^(binade - 2) with 2 mantissa bits; below 0.25 (subnormal) a fixed 2^-4
    step = torch.exp2((exponent - 1).clamp(min=-2).float() - 2)
    return torch.round(x / step) * step  # torch.round: half to even


def encode_e3m2(x: torch.Tensor) -> torch.Tensor:
    """6-bit codes (uint8) of float32 values x (already scaled; rounded here)."""
    rounded = round_to_e3m2(x.float())
    magnitude = torch.searchsorted(e3m2_magnitudes(x.device), rounded.abs().contiguous())
    return (magnitude | (torch.signbit(rounded) & (rounded != 0)).to(torch.int64) << 5).to(torch.uint8)


def decode_e3m2(codes: torch.Tensor) -> torch.Tensor:
    """float32 values of 6-bit codes."""
    return e3m2_values(codes.device)[codes.long()]


def pack_fp6(codes: torch.Tensor) -> torch.Tensor:
    """[..., K] 6-bit codes → [..., 3·ceil(K/4)] bytes (layout in the module's docstring)."""
    pad = -codes.shape[-1] % 4
    grouped = torch.nn.functional.pad(codes, (0, pad)).to(torch.int32).unflatten(-1, (-1, 4))
    word = grouped[..., 0] | grouped[..., 1] << 6 | grouped[..., 2] << 12 | grouped[..., 3] << 18
    packed = torch.stack([word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFF], dim=-1)
    return packed.flatten(-2).to(torch.uint8)


def unpack_fp6(packed: torch.Tensor, k: int) -> torch.Tensor:
    """[..., 3·ceil(k/4)] bytes → [..., k] 6-bit codes (uint8)."""
    triples = packed.to(torch.int32).unflatten(-1, (-1, 3))
    word = triples[..., 0] | triples[..., 1] << 8 | triples[..., 2] << 16
    codes = torch.stack([(word >> shift) & 0x3F for shift in (0, 6, 12, 18)], dim=-1)
    return codes.flatten(-2)[..., :k].to(torch.uint8)


def channel_scales(weight: torch.Tensor, largest: float) -> torch.Tensor:
    """float32 [..., N]: each output row's absolute maximum over ``largest`` (1 for an all-zero row)."""
    amax = weight.abs().amax(dim=-1).float()
    return torch.where(amax > 0, amax / largest, torch.ones_like(amax))


def to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """float32 values (already scaled) → float8_e4m3fn, saturating at ±448 (torch's cast would give NaN)."""
    return x.float().clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def tensor_scale(x: torch.Tensor) -> torch.Tensor:
    """float32 [] scale of a per-tensor FP8 quantization of x (dynamic activations): amax / 448, 1 if x is 0."""
    amax = x.abs().amax().float()
    return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))


def fake_quantize_e4m3(x: torch.Tensor) -> torch.Tensor:
    """x through a per-tensor e4m3 quantization and back, float32: what an FP8 GEMM sees of x."""
    scale = tensor_scale(x)
    return to_e4m3(x.float() / scale).float() * scale
