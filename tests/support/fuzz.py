"""Shared pieces of the property-based (hypothesis) fuzz tests: settings, hostile-value strategies, the outcome check.

Every fuzz test asserts the same contract: a reader given generated hostile input returns a clean result or raises
an AttestError with exit code 2 (one line naming the file); any other exception escaping is a failure, and so is an
input that takes longer than the deadline. The default suite runs a modest number of examples, derandomized so it
is reproducible; `ATTEST_FUZZ_EXAMPLES=5000 pytest tests/*/test_fuzz_*.py` is the long run (random, new inputs).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from attest.errors import AttestError

LONG_RUN = int(os.environ.get("ATTEST_FUZZ_EXAMPLES", "0"))
T = TypeVar("T")


def fuzz_settings(examples: int = 60) -> settings:
    """`examples` per test in the default suite (ATTEST_FUZZ_EXAMPLES overrides), 2 s deadline per input."""
    return settings(
        max_examples=LONG_RUN or examples,
        deadline=2000,
        derandomize=not LONG_RUN,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


def clean_or_input_error(fn: Callable[[], T]) -> T | None:
    """The reader's result, or None when it refused with exit 2 in one line; anything else propagates (a failure)."""
    try:
        return fn()
    except AttestError as exc:
        assert exc.exit_code == 2, f"{type(exc).__name__} with exit {exc.exit_code}: {exc}"
        assert "\n" not in str(exc), repr(str(exc))
        return None


HOSTILE_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from([*"-:[]{}&*!|>'\"%@`#,?\n\r\t \\<>=~_.", "\u200b", "\u00ad", "\ufeff", "\x00", "\udcff"]),
        st.characters(),
    ),
    max_size=60,
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    HOSTILE_TEXT,
)


def values(keys: st.SearchStrategy[str] = HOSTILE_TEXT) -> st.SearchStrategy[Any]:
    """Nested JSON/YAML-like values (small): the shapes a hostile document can take."""
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
        max_leaves=20,
    )


@st.composite
def mutated_yaml(draw: st.DrawFn, doc: st.SearchStrategy[Any]) -> str:
    """A generated document dumped as YAML, then maybe damaged: a line repeated (duplicate keys), truncated, or
    YAML syntax (anchors, aliases, tags, flow brackets) spliced in."""
    try:
        text = yaml.safe_dump(draw(doc), allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        text = ""
    lines = text.splitlines(keepends=True)
    how = draw(st.sampled_from(["as is", "repeat line", "truncate", "splice", "anchor bomb"]))
    if how == "repeat line" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(draw(st.integers(i, len(lines))), lines[i])
    elif how == "truncate" and text:
        return text[: draw(st.integers(0, len(text)))]
    elif how == "splice":
        at = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(["&a ", "*a", "!!python/object:os.system ", "[", "{", "<<: *a\n", "? ", "%TAG "]))
        return text[:at] + piece + draw(HOSTILE_TEXT) + text[at:]
    elif how == "anchor bomb":
        depth = draw(st.integers(1, 12))
        bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"]
        bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, depth)]
        return "".join(bomb) + text
    return "".join(lines)


@contextlib.contextmanager
def quiet() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err
