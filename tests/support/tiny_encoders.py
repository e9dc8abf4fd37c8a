"""Tiny random encoder checkpoints (BERT, RoBERTa, DistilBERT, XLM-R) with tokenizers trained on the fly,
built locally (nothing from a hub), for the legacy task tests."""
from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer

CORPUS = [
    "Hello I'm a fashion model.", "Paris is the capital of France.", "The quick brown fox jumps over the lazy dog.",
    "DeepSpeed makes inference fast and cheap.", "Seattle is a city in Washington state.",
    "My name is Sarah and I live in London.", "The weather today is sunny with a light breeze.",
    "Who wrote the book? The book was written by a famous author.", "I love this movie, it was great!",
    "This is terrible, I hated every minute.", "Transformers are neural networks built from attention.",
]
LABELS = {"text-classification": ["NEGATIVE", "NEUTRAL", "POSITIVE"],
          "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}
HEADS = {"fill-mask": "AutoModelForMaskedLM", "text-classification": "AutoModelForSequenceClassification",
         "token-classification": "AutoModelForTokenClassification",
         "question-answering": "AutoModelForQuestionAnswering", "feature-extraction": "AutoModel"}
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
MAX_TOKENS = 64
ENCODERS = ["bert", "roberta", "xlm-roberta", "distilbert"]  # the model types a tiny checkpoint is built for


def wordpiece_tokenizer() -> transformers.PreTrainedTokenizerBase:
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(CORPUS * 4, vocab_size=300, min_frequency=1)
    return transformers.BertTokenizerFast(tokenizer_object=trainer._tokenizer, model_max_length=MAX_TOKENS,
                                          unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                          cls_token="[CLS]", mask_token="[MASK]")


def bpe_tokenizer() -> transformers.PreTrainedTokenizerBase:
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(CORPUS * 4, vocab_size=400, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return transformers.RobertaTokenizerFast(tokenizer_object=trainer._tokenizer, model_max_length=MAX_TOKENS,
                                             bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                             mask_token="<mask>", cls_token="<s>", sep_token="</s>")


def model_config(model_type: str, vocab_size: int, pad_token_id: int) -> transformers.PretrainedConfig:
    if model_type == "distilbert":
        return transformers.DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                             max_position_embeddings=MAX_TOKENS, pad_token_id=pad_token_id)
    config_class = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
                    "xlm-roberta": transformers.XLMRobertaConfig}[model_type]
    positions = MAX_TOKENS + (pad_token_id + 1 if model_type != "bert" else 0)  # RoBERTa's position offset
    return config_class(vocab_size=vocab_size, max_position_embeddings=positions, pad_token_id=pad_token_id,
                        **SIZES)


def build_tiny_encoder(folder: Path, model_type: str, task: str, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = (wordpiece_tokenizer if model_type in ("bert", "distilbert") else bpe_tokenizer)()
    config = model_config(model_type, len(tokenizer), tokenizer.pad_token_id)
    if task in LABELS:
        config.id2label = dict(enumerate(LABELS[task]))
        config.label2id = {label: i for i, label in config.id2label.items()}
    torch.manual_seed(seed)
    model = getattr(transformers, HEADS[task]).from_config(config)
    with torch.no_grad():  # random but not tiny weights: outputs differ clearly from token to token
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.5)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
