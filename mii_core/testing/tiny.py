"""Tiny random checkpoints of any HF causal-LM family, built locally (nothing is downloaded).

The tokenizer is a Llama-2-style BPE trained on ``CORPUS`` (so prompts made of its words never map to
``<unk>``). The weights are "loud": with a large ``initializer_range`` in the config, attention and the MLPs
move the residual stream, and the LM head is rescaled so that the logits spread widely; the gap between
the best and second-best next token is then far above float32 noise, and greedy decoding does not flip
between two correct implementations that round differently.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast

UNK, BOS, EOS = "<unk>", "<s>", "</s>"  # ids 0, 1, 2, as in Llama 2

# A small English corpus; the tokenizer is trained on it, and test prompts are made of its words.
CORPUS = """\
The quick brown fox jumps over the lazy dog near the river bank.
A small boat drifted slowly down the river while the sun went down behind the hills.
Every morning the baker opens his shop and sells fresh bread to the people of the town.
The children walked to school together, talking about the game they played last night.
In the middle of the forest there is an old house with a red door and a green roof.
She wrote a long letter to her brother, who lives in a city far away across the sea.
The weather was cold and wet, so we stayed inside and read books by the fire.
Scientists study the stars to learn how the universe began and how it might end.
My friend likes to cook soup with carrots, onions, potatoes and a little salt.
The train arrived at the station ten minutes late because of the heavy snow.
He planted apple trees in the garden, and after five years they gave sweet fruit.
Music filled the hall as the band began to play an old song everyone knew.
The teacher asked the students to write a short story about a journey.
When the storm passed, the birds came back and the sky turned bright blue again.
Computers can help us solve hard problems, but they still need careful people.
The market was busy with farmers selling eggs, milk, cheese and fresh vegetables.
We climbed the mountain early in the day and watched the clouds move below us.
The little cat slept on the warm window and dreamed of fish and mice.
Good friends listen to each other and help when times are difficult.
The museum keeps many old maps that show how the world looked long ago.
At night the city lights shine like stars, and the streets grow quiet.
The old man told stories about the sea, the ships and the islands he had seen.
Water, wind and time slowly shape the rocks along the coast.
They built a bridge over the river so the villages could trade with each other.
Reading every day makes the mind stronger, just as running makes the legs stronger.
"""


def train_tokenizer(vocab_size: int = 400, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A Llama-2-style tokenizer: BPE over '▁'-marked words of CORPUS, BOS prepended, no byte fallback."""
    tok = Tokenizer(models.BPE(unk_token=UNK, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS],
        # Every printable ASCII character gets a token, so any ASCII prompt (a demo's) avoids <unk>.
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
        min_frequency=1,
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   clean_up_tokenization_spaces=False, model_max_length=model_max_length)


def mark_tokenizer_class(tokenizer_config: Path) -> None:
    """Name the class every transformers version knows (v5 writes its own 'TokenizersBackend')."""
    config = json.loads(tokenizer_config.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@torch.no_grad()
def scale_output_embeddings(model, logit_std: float, width: int) -> None:
    weight = model.get_output_embeddings().weight
    weight.mul_(logit_std / width ** 0.5 / weight.std())


def build_tiny_checkpoint(path, model_cls, config, *, seed: int = 0, vocab_size: int = 400,
                          logit_std: float = 8.0, **save_kwargs) -> Path:
    """Writes ``config`` (its vocabulary and special-token ids set from the tokenizer), random float32
    weights of ``model_cls`` seeded by ``seed``, the tokenizer and a generation config to ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size)
    config.vocab_size = len(tokenizer)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = None
    with torch.random.fork_rng():  # seeded weights without resetting the caller's RNG
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32).eval()
    width = model.get_output_embeddings().weight.shape[1]
    scale_output_embeddings(model, logit_std, width)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.eos_token_id)
    model.save_pretrained(path, **save_kwargs)
    tokenizer.save_pretrained(path)
    mark_tokenizer_class(path / "tokenizer_config.json")
    return path
