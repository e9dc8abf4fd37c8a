"""LangChain's ChatOpenAI against a real deployment: with_structured_output (json_schema and json_mode) and
bind_tools return what LangChain promises (a validated model, a dict, tool calls with valid arguments)."""
from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

langchain_openai = pytest.importorskip("langchain_openai")


class Pet(BaseModel):
    """A pet."""

    kind: Literal["cat", "dog"]
    age: int = Field(ge=0, le=30)


class GetWeather(BaseModel):
    """The weather in a city."""

    city: Literal["Paris", "Rome"]
    days: int = Field(ge=1, le=7)


@pytest.fixture(scope="module")
def llm(tools_server):
    return langchain_openai.ChatOpenAI(model="tools", base_url=tools_server, api_key="unused", temperature=1.0,
                                       max_tokens=64, max_retries=0)


def test_with_structured_output_json_schema_returns_the_model(llm):
    pet = llm.with_structured_output(Pet, method="json_schema").invoke("my pet")
    assert isinstance(pet, Pet)


def test_with_structured_output_json_mode_returns_a_dict(llm, tools_checkpoint):
    from transformers import AutoTokenizer

    close = AutoTokenizer.from_pretrained(tools_checkpoint).convert_tokens_to_ids("}")
    biased = llm.bind(logit_bias={str(close): 100})  # the grammar opens the object, the bias closes it
    assert biased.with_structured_output(None, method="json_mode").invoke("a JSON object please") == {}


def test_bind_tools_returns_valid_tool_calls(llm):
    message = llm.bind_tools([GetWeather], tool_choice="GetWeather").invoke("the weather in the city")
    [call] = message.tool_calls
    assert call["name"] == "GetWeather"
    GetWeather.model_validate(call["args"])
    required = llm.bind_tools([GetWeather], tool_choice="any", parallel_tool_calls=False).invoke("the weather in the city")
    assert required.tool_calls and all(GetWeather.model_validate(c["args"]) for c in required.tool_calls)
