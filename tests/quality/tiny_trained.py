"""A tiny Llama-shaped model trained on text that ships with Python (the standard library's own sources),
for measuring what quantization does to quality: random weights say nothing about it, and nothing can be
downloaded. Reusable by any quality test (weight modes, the FP8 KV cache):

    from quality.tiny_trained import heldout_chunks, tiny_trained_checkpoint
    path = tiny_trained_checkpoint()          # built once, then cached under .cache/tiny_trained/
    chunks = heldout_chunks(path)             # held-out source text, each chunk CHUNK_TOKENS tokens or fewer

Train / held-out split by file: every HELDOUT_EVERY-th top-level module of the standard library (sorted by
name) is held out. A byte-level BPE tokenizer (vocabulary VOCAB) is trained on the first TRAIN_CHARS of the
training text, then a ~0.7M-parameter Llama (3 layers, hidden 128, GQA 4/2 heads) for TRAIN_STEPS AdamW
steps on random windows, seeded: the same Python gives the same model. Under 3 minutes on 2 CPU cores
(kept small: CI starts from a fresh clone, so it always trains); the folder name carries a hash of the
recipe and Python's version, so a change of either builds a new one.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import sysconfig
from pathlib import Path

import torch

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "tiny_trained"  # git-ignored
HELDOUT_EVERY = 12
VOCAB = 512
TRAIN_CHARS = 1_000_000  # enough for the steps below (about 400k tokens), and quick to tokenize
CHUNK_TOKENS = 128
TRAIN_STEPS, BATCH, SEQ, LR, WARMUP = 300, 8, 128, 3e-3, 20
SHAPE = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False)
RECIPE = dict(heldout=HELDOUT_EVERY, vocab=VOCAB, chars=TRAIN_CHARS, steps=TRAIN_STEPS, batch=BATCH, seq=SEQ, lr=LR, warmup=WARMUP,
              shape=SHAPE, python=sys.version.split()[0], version=1)


def stdlib_texts() -> tuple[str, str]:
    """(training text, held-out text): the standard library's top-level modules, split by file."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    train = [f.read_text(encoding="utf-8", errors="replace") for i, f in enumerate(files) if i % HELDOUT_EVERY]
    heldout = [f.read_text(encoding="utf-8", errors="replace") for i, f in enumerate(files) if not i % HELDOUT_EVERY]
    return "\n".join(train)[:TRAIN_CHARS], "\n".join(heldout)


def train_tokenizer(text: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", clean_up_tokenization_spaces=False,
                                   model_max_length=SHAPE["max_position_embeddings"])


def _learning_rate(step: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    return LR * 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (TRAIN_STEPS - WARMUP)))


def train_model(ids: torch.Tensor, eos_id: int):
    """A Llama trained on random SEQ-token windows of ``ids``, seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, eos_token_id=eos_id, bos_token_id=None, **SHAPE))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    model.train()
    for step in range(TRAIN_STEPS):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step)
        starts = torch.randint(0, len(ids) - SEQ - 1, (BATCH,), generator=generator)
        batch = torch.stack([ids[s:s + SEQ] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval()


def tiny_trained_checkpoint(cache: Path = CACHE) -> Path:
    """The trained checkpoint's folder (config, float32 weights, tokenizer), built on first use."""
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"llama-stdlib-{digest}"
    if (path / "done").is_file():
        return path
    from filelock import FileLock

    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{path.name}.lock")):  # two pytest-xdist workers: one trains, the other waits
        if not (path / "done").is_file():
            _train_into(path)
    return path


def _train_into(path: Path) -> None:
    from mii_core.testing.tiny import mark_tokenizer_class

    train_text, _ = stdlib_texts()
    tokenizer = train_tokenizer(train_text)
    ids = torch.tensor(tokenizer(train_text)["input_ids"])
    model = train_model(ids, tokenizer.eos_token_id)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    mark_tokenizer_class(path / "tokenizer_config.json")
    (path / "done").write_text("")  # written last: a half-built folder is rebuilt


def heldout_chunks(path: Path, count: int = 48) -> list[list[int]]:
    """``count`` held-out token chunks of CHUNK_TOKENS tokens, spread evenly over the held-out text."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(path))(stdlib_texts()[1])["input_ids"]
    stride = max(CHUNK_TOKENS, (len(ids) - CHUNK_TOKENS) // count)
    return [ids[start:start + CHUNK_TOKENS] for start in range(0, len(ids) - CHUNK_TOKENS, stride)][:count]
