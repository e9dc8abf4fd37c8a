"""FP6 e3m2 and FP8 e4m3 codes, scales and packing against values worked out by hand."""
import pytest
import torch

from mii_core.model import quant_formats as fmt
from mii_core.model.quantization import QuantizedWeight, quantize_weight

# code -> value, from the e3m2 definition (bias 3; subnormals 2^-2 · m/4)
E3M2_BY_HAND = {0: 0.0, 1: 0.0625, 2: 0.125, 3: 0.1875, 4: 0.25, 5: 0.3125, 7: 0.4375, 8: 0.5, 12: 1.0,
                13: 1.25, 14: 1.5, 15: 1.75, 16: 2.0, 27: 14.0, 28: 16.0, 30: 24.0, 31: 28.0,
                33: -0.0625, 44: -1.0, 46: -1.5, 63: -28.0}


def test_e3m2_table_matches_the_definition():
    values = fmt.e3m2_values()
    for code, value in E3M2_BY_HAND.items():
        assert values[code].item() == value, code
    assert torch.all(values[1:32] > values[:31])  # magnitude grows with the low five bits


@pytest.mark.parametrize("x, rounded", [
    (0.09, 0.0625), (0.09375, 0.125),  # tie between codes 1 and 2: to the even mantissa (2)
    (2.25, 2.0), (26.0, 24.0),         # ties: 2.0 (m=0) over 2.5 (m=1), 24 (m=2) over 28 (m=3)
    (-1.3, -1.25), (1.9, 2.0), (30.0, 28.0), (-1000.0, -28.0), (0.02, 0.0), (0.0, 0.0)])
def test_round_to_e3m2_by_hand(x, rounded):
    assert fmt.round_to_e3m2(torch.tensor([x])).item() == rounded


def test_encode_and_decode_e3m2_by_hand():
    codes = fmt.encode_e3m2(torch.tensor([1.0, -1.5, 28.0, 0.0, -0.0625, 0.2]))
    assert codes.tolist() == [12, 46, 31, 0, 33, 3]  # 0.2 rounds to 0.1875 = code 3
    assert fmt.decode_e3m2(codes).tolist() == [1.0, -1.5, 28.0, 0.0, -0.0625, 0.1875]


def test_pack_fp6_bit_planes_by_hand():
    """One block of 64 codes, four of them nonzero (one per quarter; code 64i + 16q + j is quarter q's
    position j), worked out on paper; the packed row is three planes of 16 bytes: [nibbles of quarters 0|1,
    nibbles of quarters 2|3, crumbs], byte j of each plane for position j.
      code  0 = 45 = 0b1011_01 (q0, j0):  nibble 0b1011 = 0xB, low nibble of plane 0 byte 0;  crumb 01 -> bits 0-1
      code 17 = 30 = 0b0111_10 (q1, j1):  nibble 0b0111 = 0x7, high nibble of plane 0 byte 1; crumb 10 -> bits 2-3
      code 34 = 35 = 0b1000_11 (q2, j2):  nibble 0b1000 = 0x8, low nibble of plane 1 byte 2;  crumb 11 -> bits 4-5
      code 63 = 63 = 0b1111_11 (q3, j15): nibble 0b1111 = 0xF, high nibble of plane 1 byte 15; crumb 11 -> bits 6-7
    so plane 0 = [0x0B, 0x70, 0 ...], plane 1 = [0, 0, 0x08, 0 ..., 0xF0], crumbs = [0x01, 0x08, 0x30, 0 ..., 0xC0]."""
    codes = torch.zeros(1, 64, dtype=torch.uint8)
    codes[0, [0, 17, 34, 63]] = torch.tensor([45, 30, 35, 63], dtype=torch.uint8)
    expected = [0] * 48
    expected[0], expected[1] = 0x0B, 0x70
    expected[16 + 2], expected[16 + 15] = 0x08, 0xF0
    expected[32 + 0], expected[32 + 1], expected[32 + 2], expected[32 + 15] = 0x01, 0x08, 0x30, 0xC0
    assert fmt.pack_fp6(codes).tolist() == [expected]
    assert fmt.pack_fp6(torch.full((64,), 63, dtype=torch.uint8)).tolist() == [255] * 48


def test_pack_fp6_pads_a_short_row_with_zero_codes():
    """K = 5: one block, quarter 0's positions 0..4 only; codes 1, 2, 3, 4, 63 have nibbles 0, 0, 0, 1, 0xF and
    crumbs 1, 2, 3, 0, 3; everything else (59 padding codes) is zero."""
    packed = fmt.pack_fp6(torch.tensor([1, 2, 3, 4, 63], dtype=torch.uint8))
    assert packed.shape == (48,)
    assert packed[:16].tolist() == [0, 0, 0, 1, 0xF] + [0] * 11
    assert packed[16:32].tolist() == [0] * 16
    assert packed[32:].tolist() == [1, 2, 3, 0, 3] + [0] * 11


@pytest.mark.parametrize("k", [1, 5, 13, 63, 64, 65, 70, 200, 1000])
def test_fp6_pack_round_trip(k):
    codes = torch.randint(0, 64, (2, 5, k), dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
    packed = fmt.pack_fp6(codes)
    assert packed.shape == (2, 5, fmt.fp6_packed_bytes(k)) and fmt.fp6_packed_bytes(k) == 3 * 16 * -(-k // 64)
    assert torch.equal(fmt.unpack_fp6(packed, k), codes)
    assert torch.equal(fmt.unpack_fp6(packed[1, 3], k), codes[1, 3])  # a row (an expert's) slices as a view


def test_e4m3_by_hand():
    # e4m3 between 0.25 and 0.5 steps by 2^-5: 0.3 lies nearer 0.3125 than 0.28125; 448 is the largest
    assert fmt.to_e4m3(torch.tensor([0.3, 500.0, -500.0, 1.0])).float().tolist() == [0.3125, 448.0, -448.0, 1.0]


def test_quantize_weight_fp8_per_output_row():
    weight = torch.tensor([[896.0, 1.0, -3.0], [0.0, 0.0, 0.0], [7.0, -3.5, 0.0625]])
    q = quantize_weight(weight, "wf8af16")
    assert q.scale.tolist() == [2.0, 1.0, 1 / 64]  # amax / 448; an all-zero row keeps scale 1
    assert q.data.dtype == torch.float8_e4m3fn and q.shape == (3, 3)
    assert q.data[0].float().tolist() == [448.0, 0.5, -1.5]
    assert torch.equal(q.dequantize(), weight)  # every value here is exact in e4m3 after its scale


def test_quantize_weight_fp8_mode_one_scale_per_linear_per_row_per_expert():
    """Mode "fp8": a linear's scale is its tensor's absmax / 448 (repeated per row); an expert stack keeps one per
    row (its experts run weight-only)."""
    weight = torch.tensor([[896.0, 1.0, -3.0], [0.0, 0.0, 0.0], [7.0, -3.5, 0.0625]])
    q = quantize_weight(weight, "fp8")
    assert q.per_tensor and q.scale.tolist() == [2.0, 2.0, 2.0]
    assert q.data[2].float().tolist() == [3.5, -1.75, 0.03125]  # 7/2, -3.5/2, 0.0625/2: exact in e4m3
    assert torch.equal(q.dequantize(), weight)
    stack = quantize_weight(weight.expand(2, 3, 3), "fp8")
    assert not stack.per_tensor and stack.scale.tolist() == [[2.0, 1.0, 1 / 64]] * 2
    assert stack.select(1).per_tensor is False


def test_quantize_weight_fp6_per_output_row():
    weight = torch.tensor([[56.0, 2.0, -14.0, 1.0, 0.5], [28.0, 27.0, 0.09, -0.3, 0.0]])
    q = quantize_weight(weight, "wf6af16")
    assert q.scale.tolist() == [2.0, 1.0]
    assert q.data.shape == (2, 48) and q.in_features == 5  # one block of 64 codes: three planes of 16 bytes
    # row 1: 27 rounds to 28 (spacing 4 above 16), 0.09 to 0.0625, -0.3 to -0.3125
    assert q.dequantize().tolist() == [[56.0, 2.0, -14.0, 1.0, 0.5], [28.0, 28.0, 0.0625, -0.3125, 0.0]]


def test_quantized_stack_selects_one_expert():
    stack = quantize_weight(torch.arange(24, dtype=torch.float32).reshape(2, 3, 4), "fp8")
    assert stack.scale.shape == (2, 3)
    assert torch.equal(stack.select(1).dequantize(), stack.dequantize()[1])
    assert isinstance(stack.select(0), QuantizedWeight)


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown quantization mode 'int4'; choose one of fp8, wf8af16, wf6af16"):
        quantize_weight(torch.ones(2, 2), "int4")
