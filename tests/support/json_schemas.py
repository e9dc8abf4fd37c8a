"""Random JSON schemas for the structured-output property tests: every value they allow is short (strings of
at most 4 characters, at most 2 array items, bounded integers, depth at most 2), so a sampled output always
has room to finish within the tests' token budget."""
from __future__ import annotations

from hypothesis import strategies as st

KEYS = ["name", "age", "id", "ok", "tags", "city", "x"]

_leaf = st.one_of(
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(lambda low, span: {"type": "integer", "minimum": low, "maximum": low + span},
              st.integers(-50, 50), st.integers(0, 200)),
    st.builds(lambda low, extra: {"type": "string", "minLength": low, "maxLength": low + extra},
              st.integers(0, 2), st.integers(0, 2)),
    st.builds(lambda values: {"enum": values},
              st.lists(st.one_of(st.sampled_from(["red", "blue", "a b"]), st.integers(0, 9)), min_size=1,
                       max_size=3, unique=True)),
)


def _object(children: st.SearchStrategy) -> st.SearchStrategy:
    def build(props: dict, required_flags: list[bool]) -> dict:
        names = sorted(props)
        required = [n for n, flag in zip(names, required_flags) if flag]
        return {"type": "object", "properties": props, "required": required}
    return st.dictionaries(st.sampled_from(KEYS), children, min_size=1, max_size=3).flatmap(
        lambda props: st.builds(build, st.just(props), st.lists(st.booleans(), min_size=len(props),
                                                                max_size=len(props))))


def _array(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(lambda items, low: {"type": "array", "items": items, "minItems": low, "maxItems": 2},
                     children, st.integers(0, 1))


_inner = st.one_of(_leaf, _object(_leaf), _array(_leaf))
schemas = st.one_of(_object(_inner), _array(_object(_leaf)))
