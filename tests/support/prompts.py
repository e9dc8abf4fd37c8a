"""Test prompts. All words come from the tiny tokenizer's training corpus, so none map to <unk>."""

# Mixed lengths (1 to 40 words) so one ragged batch holds very short and long sequences.
MIXED_PROMPTS = [
    "river",
    "The old man",
    "She wrote a long letter to her brother",
    "When the storm passed, the birds came back and the sky turned bright blue again.",
    "The market was busy with farmers selling eggs, milk, cheese and fresh vegetables."
    " We climbed the mountain early in the day",
    "In the middle of the forest there is an old house with a red door and a green roof."
    " The children walked to school together, talking about the game they played last night."
    " Music filled the hall as the band began",
]

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
