"""Streamed text: pieces add up to the unstreamed text, never half a character, never a stop string."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mii_core.serving.detokenize import IncrementalDecoder, TextStream, stop_prefix_length
from support.tiny_llama import train_tokenizer

MULTIBYTE_TEXT = "東京 is big 😀 and the café is in Zürich; 東京 again 😀😀"


@pytest.fixture(scope="module")
def byte_level():
    """Byte-level BPE (GPT-2 style): characters outside ASCII are split into byte tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Trained on ASCII only, so every multi-byte character stays split over 2-4 byte tokens.
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(["the big cafe is in the city and the river again"] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def stream_pieces(tokenizer, ids, stops=(), per_push=1):
    stream = TextStream(tokenizer, list(stops))
    pieces = [stream.push(ids[i:i + per_push]) for i in range(0, len(ids), per_push)]
    return stream, pieces


@pytest.mark.parametrize("per_push", [1, 2, 3])
def test_split_multibyte_characters_never_come_out_as_replacement_chars(byte_level, per_push):
    ids = byte_level(MULTIBYTE_TEXT)["input_ids"]
    single = [byte_level.decode([i]) for i in ids]
    assert any("\ufffd" in s for s in single), "fixture problem: no character is split over tokens"
    stream, pieces = stream_pieces(byte_level, ids, per_push=per_push)
    assert not any("\ufffd" in p for p in pieces)
    full = byte_level.decode(ids, skip_special_tokens=True)
    assert full == MULTIBYTE_TEXT
    assert "".join(pieces) + stream.finish(full) == full


def test_metaspace_tokenizer_pieces_add_up_to_decode():
    tok = train_tokenizer()
    ids = tok("The quick brown fox jumps over the lazy dog")["input_ids"][1:] + [tok.eos_token_id]
    decoder = IncrementalDecoder(tok)
    pieces = [decoder.push([i]) for i in ids]
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True) == "The quick brown fox jumps over the lazy dog"


def test_cleanup_spaces_tokenizer_uses_whole_decodes(byte_level):
    byte_level.clean_up_tokenization_spaces = True  # decoding rewrites " ." to "."
    byte_level.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = True
    try:
        ids = byte_level("the city . the river")["input_ids"]
        final = byte_level.decode(ids)
        assert final == "the city. the river"
        stream, pieces = stream_pieces(byte_level, ids)
        assert "".join(pieces) == "the city. the"  # the last word waits: clean-up might still change it
        assert "".join(pieces) + stream.finish(final) == final
    finally:
        byte_level.clean_up_tokenization_spaces = False


@pytest.mark.parametrize("text, stops, held", [
    ("the quick", ["ick!"], 3),    # "ick" may grow into "ick!"
    ("say hel", ["hello"], 3),
    ("say hel", ["hello", "l"], 3),  # a whole stop string is a hit, not a prefix to hold
    ("abc", ["x"], 0),
    ("ab", ["abc", "bcd"], 2),     # the longer of "ab" (abc) and "b" (bcd)
    ("", ["abc"], 0),
])
def test_stop_prefix_length_by_hand(text, stops, held):
    assert stop_prefix_length(text, stops) == held


def test_text_that_may_begin_a_stop_string_is_held_until_decided():
    tok = train_tokenizer()
    ids = tok("the river bank and the river")["input_ids"][1:]
    stream = TextStream(tok, ["river b"])
    pieces = [stream.push([i]) for i in ids]
    sent = "".join(pieces)
    assert sent == "the "  # "river" was held (it might begin the stop), then " b" made it the stop
