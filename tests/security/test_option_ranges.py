"""Numeric options are range-checked when a request is checked, and errors stay short (issue 22, rows 2, 13)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("name, value", [("top_k", 9223372036854775808), ("top_k", 10**30), ("top_k", 2**31),
                                         ("max_new_tokens", 2**63), ("max_length", 10**30), ("min_new_tokens", 2**40)])
def test_the_pipeline_refuses_an_out_of_range_count_naming_it(checkpoint, pipeline, name, value):
    pipe = pipeline(checkpoint("gqa"))
    with pytest.raises(ValueError, match=f"'{name}'.*less than or equal to 2147483647"):
        pipe(["Seattle is"], **{name: value})


def test_errors_for_huge_options_are_short(checkpoint, pipeline):
    pipe = pipeline(checkpoint("gqa"))
    with pytest.raises(ValueError) as many:
        pipe(["Seattle is"], **{f"unknown{i}": 1 for i in range(10000)})
    assert len(str(many.value)) < 3000 and "and 9990 more problems" in str(many.value)
    with pytest.raises(ValueError) as long:
        pipe(["Seattle is"], stop=["x" * 20000, 5])
    assert len(str(long.value)) < 1000 and "stop" in str(long.value)
