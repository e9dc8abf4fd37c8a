"""The ``chat_template`` model option (vLLM's --chat-template): a checkpoint without a template can chat, and
a given template replaces the tokenizer's; rendered as transformers renders it."""
from __future__ import annotations

import argparse

import pytest
from transformers import AutoTokenizer

from mii_core.config.model import ModelConfig
from mii_core.serving.commands import _serve_options, add_serving_commands

TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} | {% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")
MESSAGES = [{"role": "user", "content": "the river"}]


def expected_ids(path, template):
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return list(tokenizer.apply_chat_template(MESSAGES, chat_template=template, add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


@pytest.mark.parametrize("given_as", ["text", "file"])
def test_a_template_given_to_the_pipeline_renders_as_transformers(pipeline, checkpoint, tmp_path, given_as):
    path = checkpoint("gqa")
    assert not getattr(AutoTokenizer.from_pretrained(str(path)), "chat_template", None)  # none of its own
    value = TEMPLATE
    if given_as == "file":
        value = str(tmp_path / "chat.jinja")
        (tmp_path / "chat.jinja").write_text(TEMPLATE)
    pipe = pipeline(path, chat_template=value)
    got = pipe.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(got) == expected_ids(path, TEMPLATE)


@pytest.mark.parametrize("bad, named", [("/no/such/chat.jinja", "neither a Jinja template"),
                                        ("{% for m in %}", "does not parse as Jinja")])
def test_a_bad_template_is_refused_naming_the_option(bad, named):
    with pytest.raises(ValueError, match=f"chat_template.*{named}"):
        ModelConfig(model_name_or_path="x", chat_template=bad)


def test_the_serve_command_takes_vllms_flag():
    parser = argparse.ArgumentParser()
    add_serving_commands(parser.add_subparsers())
    args = parser.parse_args(["serve", "m", "--chat-template", TEMPLATE])
    assert _serve_options(args)["chat_template"] == TEMPLATE

