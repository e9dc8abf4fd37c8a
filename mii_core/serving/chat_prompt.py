"""A chat turned into prompt token ids by the tokenizer's chat template, with vLLM's template options:
``add_generation_prompt`` (default true: the template opens the assistant's turn), ``continue_final_message``
(the last message is left open, so the model continues it: a prefill) and ``chat_template_kwargs`` (extra
variables the template reads, e.g. ``enable_thinking``). The REST server's chat and ``/tokenize`` routes and
the replica that renders a chat read the options through one class, so both refuse the same input alike."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

# apply_chat_template's own parameters: given inside chat_template_kwargs they would change how the
# prompt is built rather than what the template reads, so they are refused there (the first two have
# their own fields)
RESERVED_KWARGS = frozenset({"add_generation_prompt", "continue_final_message", "conversation", "messages",
                             "tools", "documents", "chat_template", "tokenize", "padding", "truncation",
                             "max_length", "return_tensors", "return_dict", "return_assistant_tokens_mask",
                             "tokenizer_kwargs"})


class ChatOptionError(ValueError):
    """A bad chat template option; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class ChatTemplateOptions:
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: Optional[Mapping[str, Any]]) -> "ChatTemplateOptions":
        """The options among ``fields`` (a request body, or the wire form), checked; absent ones default."""
        fields = fields or {}
        options = cls(add_generation_prompt=_flag(fields, "add_generation_prompt", True),
                      continue_final_message=_flag(fields, "continue_final_message", False),
                      chat_template_kwargs=_template_kwargs(fields.get("chat_template_kwargs")))
        if options.add_generation_prompt and options.continue_final_message:
            raise ChatOptionError("continue_final_message", "continue_final_message leaves the last message open "
                                  "for the model to continue, add_generation_prompt opens a new turn: set "
                                  "add_generation_prompt to false with it")
        return options

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


def chat_token_ids(tokenizer: Any, messages: list[dict[str, Any]], tools: Optional[list[dict[str, Any]]],
                   options: ChatTemplateOptions) -> list[int]:
    """The chat rendered by the tokenizer's template and tokenized. A template that cannot render these
    messages with these options raises ValueError with its reason."""
    try:
        ids = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True,
                                            add_generation_prompt=options.add_generation_prompt,
                                            continue_final_message=options.continue_final_message,
                                            **options.chat_template_kwargs)
    except Exception as exc:  # a template rejects messages it cannot render (roles, order, shape)
        raise ValueError(f"the chat template could not render these messages: {exc}") from None
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _flag(fields: Mapping[str, Any], name: str, default: bool) -> bool:
    value = fields.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ChatOptionError(name, f"{name} must be true or false, got {value!r}"[:300])
    return value


def _template_kwargs(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ChatOptionError("chat_template_kwargs", "chat_template_kwargs must be an object of the variables "
                              f"the chat template reads, got {value!r}"[:300])
    reserved = sorted(RESERVED_KWARGS & set(value))
    if reserved:
        raise ChatOptionError("chat_template_kwargs", f"chat_template_kwargs cannot set {', '.join(reserved)}: "
                              "these choose how the prompt is built (add_generation_prompt and "
                              "continue_final_message are fields of their own)")
    return dict(value)
