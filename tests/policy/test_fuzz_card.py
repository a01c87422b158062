"""Fuzz: model-card front matter (read as huggingface_hub reads it), the claim check and the license reader."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.policy.licenses import declared_licenses
from attest.policy.model_card import CARD_FILE, ParentView, StepView, check_card, read_card
from attest.policy.plain_text import plain_text
from tests.support.fuzz import HOSTILE_TEXT, clean_or_input_error, fuzz_settings, mutated_yaml, values

MERGE = StepView(name="m", kind="merge", digest="0" * 64, parents=[ParentView("ft_a", "a" * 64, "parent")])
CARD_KEYS = st.sampled_from(["license", "license_name", "base_model", "base_model_relation", "tags", "k_x", "k_y"])
front = st.dictionaries(
    CARD_KEYS,
    st.one_of(
        st.sampled_from(["mit", "other", "gpl-3.0", "apache-2.0", "MIT OR x", ""]),
        st.lists(st.sampled_from(["mit", "gpl-3.0", 3, None]), max_size=20),
        values(),
    ),
    max_size=5,
)
body = st.lists(
    st.one_of(
        HOSTILE_TEXT,
        st.sampled_from(
            ["**post**-**trained**", "fine&#8209;tuned", "[post](x)-trained", "<b>merge</b>", "```", "&amp;#42;",
             "\u200bdistilled", "<!--", "-->", "\\*", "~~", "\n\n", ". "]
        ),
    ),
    max_size=12,
).map("".join)  # fmt: skip


@st.composite
def card_text(draw: st.DrawFn) -> str:
    lead = draw(st.sampled_from(["", "\n", " \n\n", "\ufeff", "\t", "x\n"]))
    nl = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    opening = draw(st.sampled_from(["---", "---  ", "--- x", "----"]))
    closing = draw(st.sampled_from(["---", "--- ", "...", "", "---x"]))
    yaml_text = draw(mutated_yaml(front)).replace("\n", nl)
    return f"{lead}{opening}{nl}{yaml_text}{nl}{closing}{nl}{draw(body)}"


@fuzz_settings(120)
@given(card_text())
def test_card_reader_matches_huggingface_hub_or_refuses(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    from huggingface_hub import ModelCard

    folder = tmp_path_factory.mktemp("card")
    (folder / CARD_FILE).write_bytes(text.encode("utf-8", "surrogatepass"))
    ours = clean_or_input_error(lambda: read_card(folder))
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        hub = ModelCard.load(folder / CARD_FILE)
    except Exception:
        return  # the Hub cannot read it: whatever attest said (a refusal or a reading) shows nothing the Hub shows
    if ours is not None:  # where both read it, they read the same metadata and body
        assert {k: v for k, v in ours.front.items() if v is not None} == hub.data.to_dict()
        assert ours.body == hub.text
    lic = clean_or_input_error(lambda: declared_licenses(folder))
    assert lic is not None
    if ours is None:
        assert lic.problems  # an unreadable card fails the licenses rule closed
    clean_or_input_error(lambda: check_card(ours, MERGE))


@fuzz_settings(100)
@given(body)
def test_plain_text_is_bounded_and_total(markdown: str) -> None:
    text = plain_text(markdown)
    assert "\u200b" not in text and "\u00ad" not in text
    assert len(text) <= 18 * len(markdown)  # NFKC expands one character to at most 18
