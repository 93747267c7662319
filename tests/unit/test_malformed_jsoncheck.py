"""core/jsoncheck: what may travel as JSON, and the path and words that name what may not."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import pytest

from agentdeck.core.jsoncheck import (
    MAX_DEPTH,
    PATH_CHARS,
    find_problem,
    largest_text,
    safe_text,
    size_text,
)


def said(value: Any, **options: Any) -> str:
    """The problem ``find_problem`` names in ``value``, as one line."""
    problem = find_problem(value, **options)
    assert problem is not None, f"no problem found in {value!r}"
    return str(problem)


def nested(depth: int) -> list[Any]:
    """``depth`` lists, each inside the next."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_value_in_a_list_in_a_dict_is_named_by_its_path() -> None:
    """The brief's own example: the path goes through keys and indexes to the bad value."""
    output = {"items": [1, 2, 3, {"when": datetime.datetime(2026, 1, 2)}]}
    assert said(output) == "output.items[3].when: datetime is not JSON (use .isoformat())"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (math.nan, "NaN is not JSON (use null, or a string)"),
        (math.inf, "Infinity is not JSON (use null, or a string)"),
        (-math.inf, "-Infinity is not JSON (use null, or a string)"),
        ({1, 2}, "set is not JSON (make it a list)"),
        (b"\x00", "bytes is not JSON (decode it or base64 it)"),
        (datetime.date(2026, 1, 2), "date is not JSON (use .isoformat())"),
        (1 + 2j, "complex is not JSON (store .real and .imag)"),
        (object(), "object is not JSON"),
        ("ok\ud800", "the text has a lone surrogate (\\ud800 at 2) UTF-8 cannot encode"),
    ],
)
def test_each_kind_of_bad_value_is_said_in_words_with_a_hint(value: Any, words: str) -> None:
    """NaN and infinities, types JSON has no form for, text UTF-8 cannot encode: each is
    said plainly, with what to do instead when there is one obvious fix."""
    assert said({"a": [value]}) == f"output.a[0]: {words}"


def test_keys_that_are_not_names_are_quoted_and_int_keys_are_allowed() -> None:
    """A key with a space or a non-ASCII letter is quoted in the path; an int key (written
    as its digits by every encoder) is allowed and shown quoted, as it will travel."""
    assert (
        said({"a b": {"é": [math.nan]}})
        == "output['a b']['é'][0]: NaN is not JSON (use null, or a string)"
    )
    assert said({7: {"x": {1}}}) == "output['7'].x: set is not JSON (make it a list)"
    assert find_problem({7: "seven"}) is None


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ((1, 2), "a tuple ((1, 2))"),
        (True, "a bool (True)"),
        (None, "a NoneType (None)"),
        (1.5, "a float (1.5)"),
    ],
)
def test_a_key_that_is_not_a_string_is_named_at_its_object(key: Any, shown: str) -> None:
    """Keys other than strings and ints are refused: encoders disagree on how to write them
    (``None`` becomes "null" in one, "None" in another)."""
    assert said({"m": {key: 1}}) == f"output.m: a key is {shown}; JSON object keys are strings"


def test_a_key_with_a_lone_surrogate_is_refused() -> None:
    """Keys must be text UTF-8 can encode, like values."""
    assert (
        said({"\udc00": 1})
        == "output: a key has a lone surrogate (\\udc00 at 0) UTF-8 cannot encode"
    )


def test_nesting_up_to_the_limit_passes_and_one_more_level_is_named() -> None:
    """``MAX_DEPTH`` containers deep is fine; one more is refused at the container past the
    limit, its long path shortened in the middle."""
    assert find_problem(nested(MAX_DEPTH)) is None
    text = said({"deep": nested(MAX_DEPTH)})
    assert text.startswith("output.deep[0][0]")
    assert text.endswith(f"[0][0]: nested more than {MAX_DEPTH} levels deep")
    assert "more)..." in text and len(text) < PATH_CHARS + 60


def test_a_cycle_is_named_where_it_comes_round_not_followed() -> None:
    """A list that holds itself, directly or through a dict, is named at the outermost
    container that comes round again."""
    loop: list[Any] = [1]
    loop.append(loop)
    assert said({"a": loop}) == "output.a: contains itself (at output.a[1])"
    node: dict[str, Any] = {"next": [None]}
    node["next"][0] = node
    assert said([node]) == "output[0]: contains itself (at output[0].next[0])"


def test_a_shared_but_acyclic_value_is_fine() -> None:
    """The same list twice is not a cycle: JSON writes it twice."""
    shared = [1, 2]
    assert find_problem({"a": shared, "b": [shared]}) is None


def test_max_values_stops_a_value_shared_many_times_over() -> None:
    """``x = [x, x]`` fifty times is a few objects but 2**50 values once written: the walk
    stops at ``max_values`` instead of running for hours."""
    value: list[Any] = [0]
    for _ in range(50):
        value = [value, value]
    assert said(value, max_values=10_000) == "output: holds more than 10000 values"


def test_the_root_is_named_by_where() -> None:
    """``where`` names the root: a bad top-level value is named by it alone."""
    assert said(math.nan, where="usage") == "usage: NaN is not JSON (use null, or a string)"


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**100),
        1.5e308,
        "",
        "héllo ✓ 🎉",
        [],
        {},
        (1, 2),
        {"a": [1, {"b": None}], "c": "d"},
    ],
)
def test_everything_json_can_carry_passes(value: Any) -> None:
    """Plain JSON values, big ints, non-ASCII text and tuples (written as arrays) pass, and
    so ``json`` writes each of them."""
    assert find_problem(value) is None
    json.dumps(value, allow_nan=False)


def test_subclasses_of_json_types_pass() -> None:
    """A str, int or dict subclass (an enum, a defaultdict) is written as its base type."""
    import collections
    import enum

    class Colour(enum.StrEnum):
        RED = "red"

    class Size(enum.IntEnum):
        BIG = 3

    assert find_problem({"c": Colour.RED, "s": Size.BIG, "d": collections.defaultdict(int)}) is None


def test_largest_text_says_where_most_of_a_value_is() -> None:
    """The longest string and its path, so "too large" can say where."""
    assert largest_text({"a": "x" * 10, "b": [{"c": "y" * 100}]}) == ("output.b[0].c", 100)
    assert largest_text([1, 2]) is None


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (512, "512 bytes"),
        (3 * 1024, "3.0 KiB"),
        (int(12.5 * 1024**2), "12.5 MiB"),
        (3 * 1024**3, "3.0 GiB"),
    ],
)
def test_size_text(size: int, text: str) -> None:
    """Sizes for people, in binary units."""
    assert size_text(size) == text


def test_safe_text_always_encodes_and_is_cut_to_its_limit() -> None:
    """Lone surrogates become visible escapes; long text is cut with a count of the rest."""
    assert safe_text("a\ud800b") == "a\\ud800b"
    assert safe_text("x" * 50, 10) == "xxxxxxxxxx... (40 more characters)"
    assert safe_text(ValueError("boom")) == "boom"
    safe_text("é\udfff" * 10).encode("utf-8")
