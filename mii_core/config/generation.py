"""Per-request generation options (MII's names and defaults; MII's weak spots fixed, see docs)."""
from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import Field, field_validator, model_validator

from mii_core.config import guided
from mii_core.config.base import StrictModel

SEED_LIMIT = 2**64  # torch generators take 64-bit seeds
# Token counts and top_k end up in the engine's int32/int64 tensors; past this they overflow there (a
# failing step), and no model's length or vocabulary comes near it.
COUNT_LIMIT = 2**31 - 1
# Logits are divided by the temperature in float32: past this it becomes inf there and the division NaN
# (every token id 0, silently); 1e30 is already uniform over what top-k/top-p keep. (A tiny temperature is
# handled by the sampler: exactly greedy.)
TEMPERATURE_MAX = 1e30
# Stop strings are searched for in every sequence's new text after each step, on the engine's loop: bounded
# so that one request cannot slow every other's steps (vLLM bounds them only by the body size).
STOP_COUNT_LIMIT, STOP_LENGTH_LIMIT = 64, 1024
# OpenAI's ranges: penalties in [-2, 2], a logit bias in [-100, 100].
PENALTY_LIMIT, LOGIT_BIAS_LIMIT = 2.0, 100.0
# A repetition penalty divides positive logits and multiplies negative ones in float32: past this a logit
# can overflow to -inf (every token barred, the row NaN); 1e30 already bars what it touches.
REPETITION_PENALTY_MAX = 1e30


class GenerationConfig(StrictModel):
    max_length: Optional[int] = Field(default=None, gt=0, le=COUNT_LIMIT, description="prompt + output tokens")
    max_new_tokens: Optional[int] = Field(default=None, gt=0, le=COUNT_LIMIT)
    min_new_tokens: int = Field(default=0, ge=0, le=COUNT_LIMIT,
                                description="counted on generated tokens (MII: whole length)")
    stream: bool = False
    ignore_eos: bool = False
    return_full_text: bool = False
    do_sample: bool = True
    top_p: float = Field(default=0.9, gt=0, le=1, allow_inf_nan=False)
    # vLLM's: None, 0 or -1 is no top-k; a top_k at or above the vocabulary size keeps every token
    top_k: Optional[int] = Field(default=None, ge=-1, le=COUNT_LIMIT)
    min_p: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    temperature: Optional[float] = Field(default=None, gt=0, le=TEMPERATURE_MAX, allow_inf_nan=False)
    stop: list[str] = Field(default_factory=list)
    # Not negative: elsewhere -1 often means "random", which a fixed torch seed would silently not be.
    seed: Optional[int] = Field(default=None, ge=0, lt=SEED_LIMIT)
    # log-probabilities of each generated token and of this many alternatives (vLLM's logprobs; 0: the
    # chosen token's own), of the raw logits; 20 is vLLM's max_logprobs
    logprobs: Optional[int] = Field(default=None, ge=0, le=20)
    # vLLM's sampling fields (their semantics: README, Generation options; mii_core/sampling/processors.py)
    presence_penalty: float = Field(default=0.0, ge=-PENALTY_LIMIT, le=PENALTY_LIMIT, allow_inf_nan=False)
    frequency_penalty: float = Field(default=0.0, ge=-PENALTY_LIMIT, le=PENALTY_LIMIT, allow_inf_nan=False)
    repetition_penalty: float = Field(default=1.0, gt=0, le=REPETITION_PENALTY_MAX, allow_inf_nan=False)
    logit_bias: Optional[dict[int, float]] = None  # token id -> bias added to its logit, each in [-100, 100]
    min_tokens: Optional[int] = Field(default=None, ge=0, le=COUNT_LIMIT, description="vLLM's min_new_tokens")
    stop_token_ids: list[Annotated[int, Field(ge=0, le=COUNT_LIMIT)]] = Field(default_factory=list)
    bad_words: list[str] = Field(default_factory=list)  # banned token sequences, as vLLM tokenizes them
    allowed_token_ids: Optional[list[Annotated[int, Field(ge=0, le=COUNT_LIMIT)]]] = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    # keep only the prompt's last k tokens (-1: as many as the model's length limits allow)
    truncate_prompt_tokens: Optional[int] = Field(default=None, ge=-1, le=COUNT_LIMIT)
    # vLLM's: lower runs earlier; honoured by an engine with state_manager.scheduling_policy "priority" (any
    # other value than 0 is refused by a first-come-first-served engine, as vLLM refuses it)
    priority: int = Field(default=0, ge=-COUNT_LIMIT, le=COUNT_LIMIT)
    # vLLM's structured output (at most one): the output follows a JSON schema (an object or JSON text, kept
    # as JSON text), any JSON object, a regex, one of the choices, or an EBNF (GBNF) grammar
    guided_json: Optional[str] = None
    guided_json_object: bool = False
    guided_regex: Optional[str] = None
    guided_choice: Optional[list[str]] = None
    guided_grammar: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _min_tokens_is_min_new_tokens(cls, data: Any) -> Any:
        """vLLM's ``min_tokens`` sets MII's ``min_new_tokens`` (a bad value is reported under its own name)."""
        if isinstance(data, dict) and "min_new_tokens" not in data:
            value = data.get("min_tokens")
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= COUNT_LIMIT:
                data = {**data, "min_new_tokens": value}
        return data

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _logit_bias_keys_as_ids(cls, value: Any) -> Any:
        """OpenAI's keys are token ids written as strings ("50256"); each bias lies in [-100, 100]."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"logit_bias must map token ids to biases, got {type(value).__name__}")
        biases = {}
        for key, bias in value.items():
            token_id = _token_id_key(key)
            if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not (
                    -LOGIT_BIAS_LIMIT <= bias <= LOGIT_BIAS_LIMIT):
                raise ValueError(f"logit_bias must map each token id to a number in [-100, 100]; "
                                 f"{key!r:.40} maps to {bias!r:.40}")
            biases[token_id] = float(bias)
        return biases

    @field_validator("bad_words", mode="before")
    @classmethod
    def _bad_words_as_list(cls, value: Any) -> list[str]:
        words = _strings_as_list(value)
        if words is None or any(not w.strip() for w in words):
            raise ValueError(f"bad_words must be a list of non-blank strings, got {value!r}"[:500])
        return words

    @field_validator("guided_json", mode="before")
    @classmethod
    def _schema_as_text(cls, value: Any) -> Optional[str]:
        return guided.schema_text(value)

    @field_validator("guided_regex", "guided_grammar", mode="before")
    @classmethod
    def _pattern_text(cls, value: Any, info: Any) -> Optional[str]:
        return guided.pattern_text(info.field_name, value)

    @field_validator("guided_choice", mode="before")
    @classmethod
    def _choices(cls, value: Any) -> Optional[list[str]]:
        return guided.choices(value)

    @field_validator("allowed_token_ids")
    @classmethod
    def _allowed_not_empty(cls, value: Optional[list[int]]) -> Optional[list[int]]:
        if value is not None and not value:
            raise ValueError("allowed_token_ids must hold at least one token id (leave it unset to allow all)")
        return value

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _truncate_not_zero(cls, value: Optional[int]) -> Optional[int]:
        if value == 0:
            raise ValueError("truncate_prompt_tokens must be -1 (the model's limit) or at least 1, got 0")
        return value
    # log-probabilities of each prompt token after the first and of this many alternatives (vLLM's
    # prompt_logprobs), of the raw logits; such a request skips the prefix cache (see the scheduler)
    prompt_logprobs: Optional[int] = Field(default=None, ge=0, le=20)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> list[str]:
        stops = _strings_as_list(value)
        if stops is None or any(s == "" for s in stops):
            raise ValueError(f"stop must be a non-empty string or a list of non-empty strings, got {value!r}"[:500])
        if len(stops) > STOP_COUNT_LIMIT or any(len(s) > STOP_LENGTH_LIMIT for s in stops):
            raise ValueError(f"stop takes at most {STOP_COUNT_LIMIT} strings of at most {STOP_LENGTH_LIMIT} "
                             f"characters each, got {len(stops)} of up to {max(map(len, stops))}")
        return stops

    @model_validator(mode="after")
    def _check_consistent(self) -> "GenerationConfig":
        if self.max_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
            name = "min_tokens" if self.min_tokens is not None else "min_new_tokens"  # as the caller named it
            raise ValueError(f"{name}={self.min_new_tokens} exceeds max_new_tokens={self.max_new_tokens}; "
                             f"lower {name} or raise max_new_tokens")
        guided.check_one_guide([name for name in guided.GUIDED_FIELDS if getattr(self, name)])
        if self.min_tokens is not None and self.min_tokens != self.min_new_tokens:
            raise ValueError(f"min_tokens={self.min_tokens} and min_new_tokens={self.min_new_tokens} disagree; "
                             "give one of them (min_tokens is vLLM's name for min_new_tokens)")
        return self

    @property
    def top_k_limit(self) -> Optional[int]:
        """The top-k in force: None when off (None, 0 or -1, vLLM's "off")."""
        return self.top_k if self.top_k is not None and self.top_k > 0 else None

    @property
    def penalized(self) -> bool:
        """Whether a presence, frequency or repetition penalty applies."""
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1

    @property
    def guide(self) -> Optional[tuple[str, Any]]:
        """The structured-output option given, as (its field name, its value), or None."""
        name = next((name for name in guided.GUIDED_FIELDS if getattr(self, name)), None)
        return None if name is None else (name, getattr(self, name))

    @property
    def changes_logits(self) -> bool:
        """Whether a logits processor other than min_tokens' EOS bar applies (so argmax is not the answer)."""
        return bool(self.penalized or self.logit_bias or self.bad_words or self.allowed_token_ids is not None)


def _strings_as_list(value: Any) -> Optional[list[str]]:
    """None -> [], one string -> [it], a list or tuple of strings -> a list; anything else -> None."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


def _token_id_key(key: Any) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.strip().isdigit() and len(key.strip()) <= 10:
        return int(key)
    raise ValueError(f"logit_bias must have token ids as keys (integers, or integers written as strings), "
                     f"got the key {key!r:.40}")
