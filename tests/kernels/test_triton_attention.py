"""The Triton paged attention against the PyTorch reference op (mii_kernels.torch_ref), on random inputs.

Without CUDA the kernels run under Triton's interpreter (tests/kernels/conftest.py) at small shapes and
small tiles, so that even short sequences cross query-tile and key-tile edges; with CUDA they run at
Llama-3-8B-like shapes in bf16 with the tuned tiles, against the reference computed in float32.

Every case poisons what the kernel must not read: the kernel's copy of the cache holds NaN in every slot
that is not a visible key of its sequence, and block-table entries of blocks that left the sliding window
(and the tables' padding) point at a NaN block; the reference reads a clean cache and tables.
"""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from mii_core.batch import RaggedBatch, build_ragged_batch
from mii_core.model.ops import AttentionParams
from mii_core.plugins import get_plugins
from mii_kernels.torch_ref.attention import paged_attention as reference
from mii_kernels.triton import attention as triton_attention

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.bfloat16 if CUDA else torch.float32
TOLERANCE = dict(atol=1.5e-2, rtol=1e-2) if CUDA else dict(atol=1e-5, rtol=1e-4)
POISON_BLOCK = 0
SMALL_TILES = dict(prefill_block_m=16, prefill_block_n=16, decode_block_n=16,
                   prefill_block_m_large_d=16, prefill_block_n_large_d=16, decode_block_n_large_d=16)
TILES = {} if CUDA else SMALL_TILES


def by_device(cpu, cuda):
    return cuda if CUDA else cpu


# (seen, new) per sequence: decodes and prompt chunks (with prior context), shuffled together
MIXED = by_device(dict(decodes=3, decode_ctx=(1, 70), chunks=3, chunk_seen=(0, 30), chunk_new=(2, 24)),
                  dict(decodes=60, decode_ctx=(1, 4096), chunks=4, chunk_seen=(0, 3000), chunk_new=(2, 1024)))
DECODES = by_device(dict(decodes=5, decode_ctx=(1, 70)), dict(decodes=256, decode_ctx=(100, 2000)))
PROMPTS = by_device(dict(chunks=3, chunk_seen=(0, 20), chunk_new=(10, 40)),
                    dict(chunks=16, chunk_seen=(0, 2048), chunk_new=(200, 1024)))
LLAMA_HEADS = by_device((4, 2, 64), (32, 8, 128))  # q heads, kv heads, head size


def layout(seed, decodes=0, decode_ctx=(1, 1), chunks=0, chunk_seen=(0, 0), chunk_new=(2, 2)):
    rng = random.Random(seed)
    seqs = [(rng.randint(*decode_ctx) - 1, 1) for _ in range(decodes)]
    seqs += [(rng.randint(*chunk_seen), rng.randint(*chunk_new)) for _ in range(chunks)]
    rng.shuffle(seqs)
    return seqs


@dataclasses.dataclass
class Case:
    q: torch.Tensor
    k: torch.Tensor                  # clean caches and batch: the reference's
    v: torch.Tensor
    batch: RaggedBatch
    k_poisoned: torch.Tensor         # NaN outside the visible keys: the kernel's
    v_poisoned: torch.Tensor
    poisoned_tables: list[list[int]]
    seqs: list[tuple[int, int]]
    block_size: int
    scale: float
    window: int | None

    @property
    def params(self) -> AttentionParams:
        return AttentionParams(self.scale, self.window)

    def poisoned_batch(self, width: int | None = None) -> RaggedBatch:
        tables = [list(t) for t in self.poisoned_tables]
        if width is not None:
            tables[0] += [POISON_BLOCK] * (width - len(tables[0]))
        return ragged(self.seqs, tables, self.block_size)


def ragged(seqs, tables, block_size) -> RaggedBatch:
    return build_ragged_batch([[0] * new for _, new in seqs], [seen for seen, _ in seqs], tables, block_size,
                              DEVICE)


def make_case(seqs, q_heads, kv_heads, head_dim, block_size, window=None, seed=0) -> Case:
    gen = torch.Generator(DEVICE).manual_seed(seed)
    blocks_per_seq = [-(-(seen + new) // block_size) for seen, new in seqs]
    num_blocks = 1 + sum(blocks_per_seq) + 2                   # block 0: poison; 2 spare blocks
    order = (torch.randperm(num_blocks - 1, generator=torch.Generator().manual_seed(seed)) + 1).tolist()
    tables = [order[sum(blocks_per_seq[:i]):sum(blocks_per_seq[:i + 1])] for i in range(len(seqs))]
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k, v = (torch.randn(shape, generator=gen, device=DEVICE).to(DTYPE) for _ in range(2))
    tokens = sum(new for _, new in seqs)
    q = torch.randn((tokens, q_heads, head_dim), generator=gen, device=DEVICE).to(DTYPE)
    visible_slots, poisoned_tables = [], []
    for (seen, new), table in zip(seqs, tables):
        first = max(0, seen - window + 1) if window else 0   # the first new token's window start
        poisoned_tables.append([POISON_BLOCK if (i + 1) * block_size <= first else b for i, b in enumerate(table)])
        positions = torch.arange(first, seen + new)
        visible_slots.append(torch.tensor(table)[positions // block_size] * block_size + positions % block_size)
    slots = torch.cat(visible_slots).to(DEVICE)
    k_poisoned, v_poisoned = (torch.full_like(c, float("nan")) for c in (k, v))
    for clean, poisoned in ((k, k_poisoned), (v, v_poisoned)):
        poisoned.view(-1, kv_heads, head_dim)[slots] = clean.view(-1, kv_heads, head_dim)[slots]
    return Case(q, k, v, ragged(seqs, tables, block_size), k_poisoned, v_poisoned, poisoned_tables, seqs,
                block_size, head_dim ** -0.5, window)


def attention(**overrides) -> triton_attention.TritonAttention:
    """The op as a kernel set holds it, with the test's tiles and ``overrides`` as its launch config."""
    return triton_attention.TritonAttention({**TILES, **overrides})


def expected(case: Case) -> torch.Tensor:
    return reference(case.q.float(), case.k.float(), case.v.float(), case.batch, case.params)


def check(case: Case, q=None, batch=None, rows=None, **overrides) -> torch.Tensor:
    q = case.q if q is None else q
    got = attention(**overrides)(q, case.k_poisoned, case.v_poisoned, batch or case.poisoned_batch(), case.params)
    assert got.dtype == q.dtype and got.shape == q.shape
    want = expected(case)
    torch.testing.assert_close(got[:rows].float(), want, **TOLERANCE)
    return got


HEAD_SHAPES = by_device(
    cpu=[(4, 2, 64, 8), (4, 1, 80, 16), (2, 2, 128, 16), (2, 1, 256, 8)],
    cuda=[(32, 8, 128, 16), (32, 8, 128, 64), (32, 8, 128, 128), (32, 1, 128, 16), (32, 32, 128, 16),
          (32, 8, 64, 16), (32, 8, 80, 16), (32, 8, 96, 16), (32, 8, 256, 16)])


@pytest.mark.parametrize("q_heads,kv_heads,head_dim,block_size", HEAD_SHAPES,
                         ids=[f"hq{a}-hkv{b}-d{c}-bs{d}" for a, b, c, d in HEAD_SHAPES])
def test_mixed_prompt_chunks_and_decodes(q_heads, kv_heads, head_dim, block_size):
    check(make_case(layout(1, **MIXED), q_heads, kv_heads, head_dim, block_size, seed=block_size))


def test_mixed_batch_with_the_default_tiles():
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case(layout(2, **MIXED), q_heads, kv_heads, head_dim, 16)
    check(case, **triton_attention.CONFIGS["default"])


def test_prompt_chunks_spanning_several_tiles():
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    check(make_case(layout(3, **PROMPTS), q_heads, kv_heads, head_dim, 16))


@pytest.mark.parametrize("window", by_device([5, 23], [256, 1000]))
def test_sliding_window_never_reads_blocks_that_left_it(window):
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    check(make_case(layout(4, **MIXED), q_heads, kv_heads, head_dim, by_device(8, 16), window=window))


SPLIT_LAYOUTS = by_device(
    cpu={"five": dict(decodes=5, decode_ctx=(1, 70))},
    cuda={"one-1k": dict(decodes=1, decode_ctx=(1000, 1000)), "one-8k": dict(decodes=1, decode_ctx=(8000, 8000)),
          "eight-4k": dict(decodes=8, decode_ctx=(1, 4096))})


@pytest.mark.parametrize("layout_name", sorted(SPLIT_LAYOUTS))
@pytest.mark.parametrize("splits", [2, 3, None])
@pytest.mark.parametrize("window", [None, by_device(20, 700)])
def test_decodes_split_over_the_context(layout_name, splits, window):
    """Split-K decoding (more splits than some short contexts have tiles) merged by the reduce kernel;
    None picks the count from the shapes (with a low keys-per-split floor on the CPU so that it splits)."""
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case(layout(5, **SPLIT_LAYOUTS[layout_name]), q_heads, kv_heads, head_dim, 16, window=window)
    floor = by_device(16, 512)
    if splits is None:
        chosen = attention(decode_min_keys_per_split=floor).decode_splits(
            len(case.seqs), kv_heads, case.batch.block_tables.shape[1] * 16, window, DEVICE)
        assert chosen > 1
    check(case, decode_splits=splits, decode_min_keys_per_split=floor)


@pytest.mark.parametrize("merge", ["by the last split", "by the reduce kernel", "too few counters"])
def test_split_decodes_merged_in_kernel_or_by_the_reduce(monkeypatch, merge):
    """A split decode's splits merged by the last of them to finish (the op's arrival counters) or, without
    counters or with too few for the step, by the reduce kernel: each path is made the only one possible
    (the other's kernel replaced by None), matches the dense reference, and leaves the counters at zero, so
    the next step (a graph replay) counts from zero again: two steps run on the same counters."""
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case(layout(5, **SPLIT_LAYOUTS[sorted(SPLIT_LAYOUTS)[0]]), q_heads, kv_heads, head_dim, 16)
    config = attention(decode_splits=3, decode_min_keys_per_split=16).config
    arrivals = {"by the last split": torch.zeros(4096, dtype=torch.int32, device=DEVICE), "by the reduce kernel": None,
                "too few counters": torch.zeros(1, dtype=torch.int32, device=DEVICE)}[merge]
    if merge == "by the last split":
        monkeypatch.setattr(triton_attention, "_reduce_kernel", None)
    else:
        monkeypatch.setattr(triton_attention, "_merge_if_last", None)
    for _ in range(2):
        got = triton_attention.paged_attention(case.q, case.k_poisoned, case.v_poisoned, case.poisoned_batch(),
                                               case.params, config, arrivals)
        torch.testing.assert_close(got.float(), expected(case), **TOLERANCE)
        assert arrivals is None or not arrivals.any()


@pytest.mark.parametrize("path", ["mixed, unsplit", "split, reduce kernel", "split, merged by the last"])
def test_the_output_absmax_is_joined_by_whichever_kernel_writes_the_output(path):
    """With ``amax`` every program writing output (prefill, unsplit decode, reduce kernel, last split) joins
    its largest |value| as stored: the result equals torch's max |output| (the NaN-poisoned cache outside
    the visible keys never reaches it), and an absmax already larger stays."""
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    split = path != "mixed, unsplit"
    seqs = layout(5, **SPLIT_LAYOUTS[sorted(SPLIT_LAYOUTS)[0]]) if split else layout(3, **MIXED)
    case = make_case(seqs, q_heads, kv_heads, head_dim, 16)
    config = attention(**(dict(decode_splits=3, decode_min_keys_per_split=16) if split else {})).config
    arrivals = torch.zeros(4096, dtype=torch.int32, device=DEVICE) if path == "split, merged by the last" else None
    amax = torch.zeros((), dtype=torch.float32, device=DEVICE)
    got = triton_attention.paged_attention(case.q, case.k_poisoned, case.v_poisoned, case.poisoned_batch(),
                                           case.params, config, arrivals, amax)
    torch.testing.assert_close(got.float(), expected(case), **TOLERANCE)
    assert amax.item() == got.float().abs().max().item() > 0
    held = torch.tensor(1e4, device=DEVICE)
    triton_attention.paged_attention(case.q, case.k_poisoned, case.v_poisoned, case.poisoned_batch(), case.params,
                                     config, arrivals, held)
    assert held.item() == 1e4


@pytest.mark.parametrize("splits", [None, 4])
def test_padded_graph_metadata(splits):
    """A CUDA-graph decode step: extra sequences with one key in a scratch block, block tables padded to a
    fixed width, and the batch's int fields stale (the decode path must use shapes only)."""
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case(layout(6, **DECODES), q_heads, kv_heads, head_dim, 16)
    scratch = case.k.shape[0] - 1                          # a spare block no sequence owns
    pads = 3
    seqs = case.seqs + [(0, 1)] * pads
    tables = [list(t) for t in case.poisoned_tables] + [[scratch]] * pads
    width = 2 * max(len(t) for t in tables)
    tables[0] += [POISON_BLOCK] * (width - len(tables[0]))
    padded = dataclasses.replace(ragged(seqs, tables, 16), max_query_len=0, max_context_len=0,
                                 max_prefill_context_len=0)
    q = torch.cat([case.q, torch.randn((pads, q_heads, head_dim), device=DEVICE).to(DTYPE)])
    check(case, q=q, batch=padded, rows=len(case.seqs), decode_splits=splits)


def test_q_as_a_strided_view_of_a_fused_projection():
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case(layout(7, **MIXED), q_heads, kv_heads, head_dim, 16)
    fused = torch.randn((case.q.shape[0], q_heads + 2 * kv_heads, head_dim), device=DEVICE).to(DTYPE)
    fused[:, :q_heads] = case.q
    check(case, q=fused[:, :q_heads])


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("splits", [None, 4])
def test_decode_step_replays_in_a_cuda_graph(splits):
    """Captured once with padded metadata, replayed after the step's context lengths changed in place."""
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case(layout(8, **DECODES), q_heads, kv_heads, head_dim, 16)
    static = case.poisoned_batch(width=case.batch.block_tables.shape[1] + 8)
    attend = attention(decode_splits=splits)
    run = lambda: attend(case.q, case.k_poisoned, case.v_poisoned, static, case.params)  # noqa: E731
    run()  # compiles outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    shorter = [(max(0, seen - random.Random(i).randint(0, 50)), 1) for i, (seen, _) in enumerate(case.seqs)]
    static.context_lens.copy_(torch.tensor([seen + 1 for seen, _ in shorter], device=DEVICE))
    graph.replay()
    torch.cuda.synchronize()
    shorter_case = dataclasses.replace(case, batch=ragged(shorter, [list(t) for t in case.batch.block_tables.tolist()],
                                                          16))
    torch.testing.assert_close(out.float(), expected(shorter_case), **TOLERANCE)


def test_registry_prefers_triton_on_cuda_only():
    kernels = get_plugins().kernels
    assert kernels.choose("paged_attention", "cuda").name == "triton.paged_attention"
    assert kernels.choose("paged_attention", "cpu").name == "torch_ref.paged_attention"


def test_bad_arguments_say_what_to_change():
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case([(3, 1)], q_heads, kv_heads, head_dim, 16)
    attend = attention()
    with pytest.raises(ValueError, match="window"):
        attend(case.q, case.k, case.v, case.batch, AttentionParams(case.scale, 0))
    with pytest.raises(ValueError, match="multiple"):
        attend(case.q[:, :3], case.k, case.v, case.batch, case.params)
    with pytest.raises(ValueError, match="block size"):
        attend(case.q, case.k[:, :8], case.v[:, :8], case.batch, case.params)
    with pytest.raises(ValueError, match="alibi_slopes"):
        attend(case.q, case.k, case.v, case.batch, AttentionParams(case.scale, alibi_slopes=torch.ones(3)))
    with pytest.raises(ValueError, match="unknown attention config"):
        triton_attention.TritonAttention("no-such-config")


def test_launch_config_is_read_from_the_environment_when_the_op_is_made(monkeypatch):
    """The env override picks the config of each op instance made after it is set, not at import."""
    monkeypatch.setenv("MII_TRITON_ATTENTION_CONFIG", "long_kv")
    assert triton_attention.TritonAttention().config == triton_attention.CONFIGS["long_kv"]
    monkeypatch.delenv("MII_TRITON_ATTENTION_CONFIG")
    assert triton_attention.TritonAttention().config == triton_attention.CONFIGS["default"]


def test_the_op_asks_for_values_along_slots_unless_its_config_says_features():
    """The layout measured faster on the H200 (W1's decode attention) is the default; config
    ``fp8_values_along_features`` keeps the plain one. The kernel reads both under any config (the layout
    tests in test_fp8_kv_kernels.py)."""
    assert triton_attention.TritonAttention().reads_slot_major_values
    assert not triton_attention.TritonAttention("fp8_values_along_features").reads_slot_major_values


@pytest.mark.parametrize("in_kernel", [False, True])
def test_the_op_merges_split_decodes_as_its_config_says(monkeypatch, in_kernel):
    """``decode_merge_in_kernel`` (config "merge_in_kernel") picks the path: by default the reduce kernel (the
    in-kernel merge's kernel removed, so only that path can run), with the key the last split (the reduce
    kernel removed); both right, twice over."""
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case(layout(5, **SPLIT_LAYOUTS[sorted(SPLIT_LAYOUTS)[0]]), q_heads, kv_heads, head_dim, 16)
    monkeypatch.setattr(triton_attention, "_merge_if_last" if not in_kernel else "_reduce_kernel", None)
    assert triton_attention.CONFIGS["default"]["decode_merge_in_kernel"] is False
    assert triton_attention.CONFIGS["merge_in_kernel"]["decode_merge_in_kernel"] is True
    for _ in range(2):
        check(case, decode_splits=3, decode_min_keys_per_split=16, decode_merge_in_kernel=in_kernel)
