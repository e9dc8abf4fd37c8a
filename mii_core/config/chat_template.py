"""The ``chat_template`` model option (vLLM's ``--chat-template``): a Jinja chat template given inline or
as a file, for a checkpoint whose tokenizer has none or whose template should be replaced."""
from __future__ import annotations

from pathlib import Path

# Jinja's markers: a value with none of them is taken for a file path
_JINJA_MARKERS = ("{{", "{%", "{#")


def chat_template_text(value: str) -> str:
    """The template itself: ``value`` when it holds Jinja markers, else the contents of the file it names.
    A missing file or a template that does not parse is a ValueError naming the option."""
    if not any(marker in value for marker in _JINJA_MARKERS):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"chat_template {value[:200]!r} is neither a Jinja template (no {{{{ or {{% in it) "
                             "nor a file that exists; give the template itself or the path of a file holding it")
        try:
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"chat_template file '{path}' cannot be read: {exc}") from None
    _check_parses(value)
    return value


def _check_parses(template: str) -> None:
    import jinja2  # transformers renders chat templates with it, so it is installed with transformers

    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"chat_template does not parse as Jinja: {exc.message} (line {exc.lineno})") from None
