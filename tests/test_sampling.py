"""Sampling: seeded runs repeat, top_k=1 is greedy, and filter_logits follows MII's order."""

import pytest
import torch

from support.compare import assert_texts_match
from support.prompts import MIXED_PROMPTS

NEW_TOKENS = 20
SEEDED = dict(do_sample=True, seed=1234, top_p=0.9, temperature=0.8, max_new_tokens=NEW_TOKENS, ignore_eos=True)
INF = float("inf")


def texts(responses):
    return [r.generated_text for r in responses]


def greedy_texts(oracle, path, prompts, new_tokens=NEW_TOKENS):
    return [oracle(path).greedy(p, new_tokens, ignore_eos=True).text for p in prompts]


def test_seeded_sampling_repeats_across_calls(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    pipe = pipeline(path)
    first = texts(pipe(MIXED_PROMPTS, **SEEDED))
    pipe(MIXED_PROMPTS[:2], do_sample=True, max_new_tokens=5)  # unseeded use in between
    second = texts(pipe(MIXED_PROMPTS, **SEEDED))
    assert first == second
    assert first != greedy_texts(oracle, path, MIXED_PROMPTS), "the run must actually have sampled"


def test_seeded_sampling_repeats_across_pipelines(checkpoint, pipeline):
    import mii_core

    path = checkpoint("gqa")
    first = texts(pipeline(path)(MIXED_PROMPTS, **SEEDED))
    other = mii_core.pipeline(str(path))
    try:
        assert texts(other(MIXED_PROMPTS, **SEEDED)) == first
    finally:
        other.destroy()


def test_top_k_one_is_greedy(checkpoint, oracle, pipeline):
    path = checkpoint("llama3")
    responses = pipeline(path)(MIXED_PROMPTS, do_sample=True, top_k=1, seed=5, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert_texts_match(responses, [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS])


def test_different_seeds_differ(checkpoint, pipeline):
    pipe = pipeline(checkpoint("gqa"))
    hot = dict(do_sample=True, top_p=0.95, temperature=1.5, max_new_tokens=32, ignore_eos=True)
    prompts = MIXED_PROMPTS[:4]
    assert texts(pipe(prompts, seed=1, **hot)) != texts(pipe(prompts, seed=2, **hot))


def test_sampling_is_the_default(checkpoint, oracle, pipeline):
    """As in MII, do_sample defaults to True (top_p 0.9)."""
    path = checkpoint("gqa")
    responses = pipeline(path)(MIXED_PROMPTS, seed=99, max_new_tokens=24, ignore_eos=True)
    assert texts(responses) != greedy_texts(oracle, path, MIXED_PROMPTS, 24)


# --- filter_logits against hand-worked values and a PyTorch reference ---------------------------

# Row 0 sorted: 2.0 (idx 1), 1.0 (idx 3), 0.5 (idx 0), 0.0 (idx 4), -1.0 (idx 2).
# Full softmax: .563 .207 .126 .076 .028 (cumulative .563 .770 .896 .972 1).
# Softmax of the top 3 only: .629 .231 .140 (cumulative .629 .860 1).
# With a temperature the best logit (2.0) is first shifted to 0, then the row is divided by it.
HAND_LOGITS = torch.tensor([[0.5, 2.0, -1.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    "options, expected",
    [
        # top-k 3, then top-p .8 on the top-3 softmax keeps 2 tokens, then (x - 2) / 0.5.
        # (top-p first would keep 3; temperature first would keep only 1.)
        (dict(top_k=3, top_p=0.8, temperature=0.5), [-INF, 0.0, -INF, -2.0, -INF]),
        (dict(top_p=0.8), [0.5, 2.0, -INF, 1.0, -INF]),
        (dict(top_p=0.5), [-INF, 2.0, -INF, -INF, -INF]),
        (dict(top_p=0.01), [-INF, 2.0, -INF, -INF, -INF]),  # the best token always stays
        (dict(top_k=2), [-INF, 2.0, -INF, 1.0, -INF]),
        (dict(temperature=2.0), [-0.75, 0.0, -1.5, -0.5, -1.0]),
        (dict(top_p=1.0), [0.5, 2.0, -1.0, 1.0, 0.0]),  # cumulative 1 is reached only at the end
    ],
)
def test_filter_logits_hand_worked(options, expected):
    from mii_core.sampling import filter_logits

    filtered = filter_logits(HAND_LOGITS.clone(), **options)
    torch.testing.assert_close(filtered, torch.tensor([expected]), atol=1e-6, rtol=0)


def reference_filter(logits, top_k=None, top_p=None, temperature=None):
    """MII order: top-k, then top-p on the softmax of what is left, then temperature (best logit at 0)."""
    logits = logits.clone()
    if top_k is not None:
        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]
        logits[logits < kth_best] = -INF
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p  # the set had already reached top_p without it
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits[drop] = -INF
    if temperature is not None:
        logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    return logits


def assert_no_top_p_boundary_cases(logits, top_k, top_p):
    """Cumulative masses within 1e-4 of top_p could legitimately round either way."""
    if top_p is None:
        return
    kept = reference_filter(logits, top_k=top_k)
    cumulative = kept.sort(dim=-1, descending=True).values.softmax(dim=-1).cumsum(dim=-1)
    assert (cumulative - top_p).abs().min() > 1e-4, "fixture problem: pick another seed"


@pytest.mark.parametrize(
    "options",
    [
        dict(top_k=5),
        dict(top_p=0.7),
        dict(temperature=0.7),
        dict(top_k=10, top_p=0.8, temperature=1.3),
        dict(top_k=50, top_p=0.9),  # top_k == vocab size: a no-op
    ],
)
def test_filter_logits_matches_reference(options):
    from mii_core.sampling import filter_logits

    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(3)) * 3
    assert_no_top_p_boundary_cases(logits, options.get("top_k"), options.get("top_p"))
    expected = reference_filter(logits, **options)
    filtered = filter_logits(logits.clone(), **options)
    assert torch.equal(torch.isinf(filtered), torch.isinf(expected)), "different tokens removed"
    torch.testing.assert_close(filtered, expected, atol=1e-5, rtol=1e-6)


# --- exactness at the edges: top_p=1.0, the token that crosses p, tiny temperatures ---------------


def test_top_p_one_leaves_every_token():
    """The issue's case: float32 rounding let the cumulative sum reach 1.0 early, and only 9-72 of
    400 tokens survived. A skewed row (one logit far above the rest) is the hardest case."""
    from mii_core.sampling import filter_logits

    logits = torch.randn(4, 400, generator=torch.Generator().manual_seed(0)) * 8
    skewed = torch.zeros(1, 400)
    skewed[0, 7] = 30.0  # the other 399 tokens hold ~1e-13 each: float32 sums reach 1.0 at once
    for row in (logits, skewed):
        assert torch.equal(filter_logits(row.clone(), top_p=1.0), row)
    per_row = filter_logits(torch.cat([logits[:2], skewed]), top_p=torch.tensor([1.0, 0.5, 1.0]))
    assert torch.equal(per_row[0], logits[0]) and torch.equal(per_row[2], skewed[0])
    assert bool(torch.isinf(per_row[1]).any()), "a row with top_p 0.5 must still be filtered"


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.999, 0.99999])
@pytest.mark.parametrize("scale", [1.0, 8.0, 30.0])
def test_top_p_keeps_the_smallest_set_that_reaches_p(top_p, scale):
    """For each row: the kept tokens are the most likely ones, their mass (float64) reaches p, and
    without the least likely kept token it would not (so the token that crosses p is kept)."""
    from mii_core.sampling import filter_logits

    logits = torch.randn(64, 4000, generator=torch.Generator().manual_seed(int(scale))) * scale
    kept = ~torch.isinf(filter_logits(logits.clone(), top_p=top_p))
    probs = logits.double().softmax(dim=-1)
    for row in range(logits.shape[0]):
        order = probs[row].argsort(descending=True)
        count = int(kept[row].sum())
        assert bool(kept[row, order[:count]].all()), f"row {row}: kept tokens are not the most likely ones"
        mass = probs[row, order[:count]].sum().item()
        without_last = mass - probs[row, order[count - 1]].item()
        assert mass >= top_p - 1e-9, f"row {row}: kept mass {mass} does not reach top_p {top_p}"
        assert without_last < top_p + 1e-9, f"row {row}: {count} tokens kept, fewer reach top_p {top_p}"


@pytest.mark.parametrize("temperature", [1e-6, 1e-40, 1e-300])
def test_tiny_temperature_is_greedy_without_nan(temperature):
    """1e-40 is below float32's smallest normal and 1e-300 is 0 in float32: both once gave NaN,
    and argmax of NaN picked token 0. The softmax must be one-hot on the best token."""
    from mii_core.sampling import filter_logits

    logits = torch.randn(8, 400, generator=torch.Generator().manual_seed(1)) * 4
    probs = filter_logits(logits.clone(), top_p=0.9, temperature=temperature).softmax(dim=-1)
    assert not bool(probs.isnan().any())
    expected = torch.nn.functional.one_hot(logits.argmax(dim=-1), 400).float()
    assert torch.equal(probs, expected)


def test_tiny_temperature_samples_the_greedy_text(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    responses = pipeline(path)(MIXED_PROMPTS, do_sample=True, temperature=1e-40, seed=7,
                               max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert_texts_match(responses, [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS])
