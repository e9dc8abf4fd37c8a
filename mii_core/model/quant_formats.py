"""The number formats of weight quantization, in plain PyTorch: FP8 e4m3 and FP6 e3m2 codes, their scales
and the packing of FP6 codes. Load-time quantization and every kernel's reference read these.

FP8 e4m3 (``torch.float8_e4m3fn``): largest finite value 448. FP6 e3m2 (FP6-LLM's format): 1 sign bit,
3 exponent bits (bias 3, no infinities or NaN), 2 mantissa bits; normal values ±2^(e-3)·(1 + m/4) for
e = 1..7, subnormal ±2^-2·(m/4); largest 28, smallest nonzero 0.0625. A code is the 6-bit integer
``sign << 5 | e << 2 | m``; since the magnitude grows with the low 5 bits, a code is found by a sorted
search.

FP6 packing: bit planes, after FP6-LLM's bit-level pre-packing. A kernel reading 6-bit codes packed back to
back (four in three bytes) loads two bytes at a computed, unaligned offset per code and shifts by an amount
that changes from code to code: its loads do not vectorise and the decode costs about ten integer operations
(with that layout the FP6 decode step took 3.3x bf16's time on the H200). Here each code ``s eee mm`` is split into
its high 4 bits ``s eee`` (a nibble) and low 2 bits ``mm`` (a crumb), each stored in a plane of its own:

* a row of K codes is padded with zero codes to ``Kp`` = a multiple of ``FP6_BLOCK`` (64) codes; block ``i``
  holds codes ``64i .. 64i + 63``, in four quarters of ``FP6_RUN`` (16) codes: code ``64i + 16q + j`` is
  position ``j`` of quarter ``q``;
* the packed row is three planes of ``Kp / 4`` bytes each, ``[nibbles of quarters 0, 1 | nibbles of quarters
  2, 3 | crumbs]``, and byte ``p = 16i + j`` of every plane belongs to position ``j`` of block ``i``: plane
  ``q // 2`` holds quarter ``q``'s nibble in its low (q even) or high (q odd) four bits, the crumb plane holds
  quarter ``q``'s crumb in bits ``2q, 2q + 1``.

So a kernel reading the codes of plane bytes ``p0 .. p0 + P`` loads the same contiguous run of P bytes from
each plane (vectorised loads, nothing computed per code but the decode), and gets four tiles of P codes each,
quarter ``q``'s at positions ``64·(p // 16) + 16q + p % 16``: runs of 16 consecutive codes, matched by runs
of 16 consecutive activations. Decoding quarter ``q`` is two shifts and masks to take its nibble and crumb,
then the bit placement (kernels/mii_kernels/triton/quant_decode.py). Three planes of one byte index rather
than one interleaved block: a chunk of any multiple of 64 codes is one contiguous load per plane. 16-code runs
(one 16-byte load of a plane per thread's run), 64-code blocks: the padding is at most 63 codes a row, and the
projection sizes of Llama-3, Mixtral and Qwen2 and their 2-, 4- and 8-way shards are multiples of 64 (nothing
padded there); longer blocks would pad such shards (Qwen2-7B's 18944 / 8 = 2368 is not a multiple of 128). A
row of K codes takes ``3 · Kp / 4`` bytes, as the bit stream did for K a multiple of 64. FP6-LLM goes further
and decodes in 32-bit words, two float16 per integer operation; in Triton that needs a tile's elements split
into float16 halves, so it is left until the GPU shows whether the per-code decode here still bounds the step.

Tensor parallelism never cuts packed rows along K: every rank quantizes (and packs) its own shard of the
full-precision weight (mii_core/model/parallel.py, parameters.py), so a row-parallel shard of K / ranks
columns is padded to 64 on its own; rows (N) and experts are independent, so slicing them is a view.
"""
from __future__ import annotations

import torch

FP8_MAX = 448.0
FP6_MAX = 28.0
FP6_BLOCK, FP6_RUN = 64, 16  # codes per packing block, per quarter of a block (module docstring)


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


def fp6_plane_bytes(k: int) -> int:
    """Bytes of one plane of a packed row of ``k`` codes (a quarter of ``k`` padded to ``FP6_BLOCK``)."""
    return -(-k // FP6_BLOCK) * FP6_BLOCK // 4


def fp6_packed_bytes(k: int) -> int:
    """Bytes of a packed row of ``k`` codes: its three planes."""
    return 3 * fp6_plane_bytes(k)


def pack_fp6(codes: torch.Tensor) -> torch.Tensor:
    """[..., K] 6-bit codes → [..., 3·Kp/4] bytes: the bit planes of the module's docstring."""
    k = codes.shape[-1]
    padded = torch.nn.functional.pad(codes.to(torch.uint8), (0, -k % FP6_BLOCK))
    quarters = padded.unflatten(-1, (-1, 4, FP6_RUN))  # [..., block, quarter, position]
    nibbles, crumbs = quarters >> 2, quarters & 3
    low_pair = nibbles[..., 0, :] | nibbles[..., 1, :] << 4
    high_pair = nibbles[..., 2, :] | nibbles[..., 3, :] << 4
    crumb_byte = crumbs[..., 0, :] | crumbs[..., 1, :] << 2 | crumbs[..., 2, :] << 4 | crumbs[..., 3, :] << 6
    return torch.cat([plane.flatten(-2) for plane in (low_pair, high_pair, crumb_byte)], dim=-1)


def unpack_fp6(packed: torch.Tensor, k: int) -> torch.Tensor:
    """[..., 3·Kp/4] bytes → [..., k] 6-bit codes (uint8)."""
    planes = packed.unflatten(-1, (3, -1, FP6_RUN))  # [..., plane, block, position]
    quarters = []
    for quarter in range(4):
        nibble = planes[..., quarter // 2, :, :] >> 4 * (quarter % 2) & 0xF
        crumb = planes[..., 2, :, :] >> 2 * quarter & 3
        quarters.append(nibble << 2 | crumb)
    return torch.stack(quarters, dim=-2).flatten(-3)[..., :k]


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


def activation_codes(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float8_e4m3fn codes of x over a per-tensor ``scale``: x · (1/scale), the reciprocal rounded once (as the
    KV cache's write: a kernel then multiplies each value rather than dividing it), saturated at ±448."""
    return to_e4m3(x.float() * torch.reciprocal(scale))


def fake_quantize_e4m3(x: torch.Tensor) -> torch.Tensor:
    """x through a per-tensor e4m3 quantization and back, float32: what an FP8 GEMM sees of x."""
    scale = tensor_scale(x)
    return activation_codes(x, scale).float() * scale
