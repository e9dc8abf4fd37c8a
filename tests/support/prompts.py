"""Test prompts. All words come from the tiny tokenizer's training corpus, so none map to <unk>."""
from mii_core.testing.parity import PROMPTS

# Mixed lengths (1 to 40 words) so one ragged batch holds very short and long sequences.
MIXED_PROMPTS = PROMPTS  # mii_core.testing's (public), one list

# Many distinct prompts for load tests: sliding windows over one long text.
_LONG_TEXT = " ".join(MIXED_PROMPTS[3:]).split()


def many_prompts(count: int) -> list[str]:
    """`count` distinct prompts of 2 to 12 words."""
    prompts = []
    for i in range(count):
        start = i % (len(_LONG_TEXT) - 12)
        length = 2 + (i * 7) % 11
        prompts.append(" ".join(_LONG_TEXT[start : start + length]))
    assert len(set(prompts)) == count, "load-test prompts must be distinct"
    return prompts
