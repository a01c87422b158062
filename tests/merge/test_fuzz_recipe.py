"""Fuzz: mergekit recipes as the merge engine and `record merge` (recording mode) read them (statements/recipe.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.statements.recipe import MergeRecipe, load_recipe, parse_recipe
from attest.strict_yaml import load_yaml
from tests.support.fuzz import HOSTILE_TEXT, SCALARS, clean_or_input_error, fuzz_settings, mutated_yaml, values

near = st.one_of(SCALARS, values())
params = st.dictionaries(
    st.sampled_from(["weight", "density", "t", "epsilon", "lambda", "normalize", "filter", "value"]),
    st.one_of(st.floats(allow_nan=True), st.lists(st.floats(-2, 2), max_size=3), near),
    max_size=3,
)
model_ref = st.fixed_dictionaries(
    {"model": st.one_of(st.sampled_from(["./a", "org/m@rev", "a+lora", ""]), near)}, optional={"parameters": params}
)
recipe_doc = st.fixed_dictionaries(
    {},
    optional={
        "merge_method": st.one_of(st.sampled_from(["linear", "slerp", "ties", "dare_ties", "passthrough", "x"]), near),
        "base_model": st.one_of(st.sampled_from(["./base", ""]), near),
        "models": st.one_of(st.lists(model_ref, max_size=3), near),
        "slices": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"sources": st.lists(st.fixed_dictionaries({"model": st.text(max_size=6),
                                                                "layer_range": st.lists(near, max_size=3)}),
                                         max_size=2)}
                ),
                max_size=2,
            ),
            near,
        ),
        "parameters": params,
        "dtype": st.one_of(st.sampled_from(["bfloat16", "float16", "float32", "int8"]), near),
        "tokenizer_source": near,
        "x": near,
    },
)  # fmt: skip


@fuzz_settings(150)
@given(st.one_of(mutated_yaml(recipe_doc), HOSTILE_TEXT))
def test_merge_engine_recipe_parser_refuses_cleanly(text: str) -> None:
    recipe = clean_or_input_error(lambda: parse_recipe(text, "fuzz.yml"))
    assert recipe is None or isinstance(recipe, MergeRecipe)


@pytest.fixture(scope="module")
def mergekit_imported() -> None:
    """mergekit's first import takes seconds: outside the per-input deadline."""
    pytest.importorskip("mergekit.config")


@fuzz_settings(80)
@given(mutated_yaml(recipe_doc))
@pytest.mark.usefixtures("mergekit_imported")
def test_record_recipe_reader_refuses_cleanly(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    p = tmp_path_factory.mktemp("recipe") / "merge.yml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    recipe = clean_or_input_error(lambda: load_recipe(p, recording=True))
    assert recipe is None or isinstance(recipe, MergeRecipe)


@fuzz_settings(80)
@given(mutated_yaml(values()))
def test_strict_yaml_refuses_cleanly(text: str) -> None:
    for unique in (True, False):
        clean_or_input_error(lambda u=unique: load_yaml(text, "fuzz.yml", "document", unique_keys=u))  # type: ignore[misc]
