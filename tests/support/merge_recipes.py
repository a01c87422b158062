"""Recipes the merge tests run through both mergekit 0.1.5 and attest, over the tiny checkpoints."""

from __future__ import annotations

from pathlib import Path


def recipes(m: dict[str, Path]) -> dict[str, str]:
    base, a, b, base4, ft4 = m["base"], m["ft_a"], m["ft_b"], m["base4"], m["ft4"]
    return {
        "linear": f"""
merge_method: linear
models:
  - model: {a}
    parameters: {{weight: 1.0}}
  - model: {b}
    parameters: {{weight: 0.75}}
dtype: bfloat16
""",
        "linear_out_dtype": f"""
merge_method: linear
models:
  - model: {a}
    parameters: {{weight: 0.5}}
  - model: {b}
    parameters: {{weight: [0.2, 0.9]}}
  - model: {base}
    parameters: {{weight: 0.3}}
parameters: {{normalize: false}}
dtype: float32
out_dtype: float16
""",
        "slerp": f"""
merge_method: slerp
base_model: {a}
models:
  - model: {a}
  - model: {b}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
""",
        "nuslerp": f"""
merge_method: nuslerp
base_model: {base}
models:
  - model: {a}
    parameters: {{weight: 1.0}}
  - model: {b}
    parameters: {{weight: 0.6}}
""",
        "nuslerp_row_wise": f"""
merge_method: nuslerp
models:
  - model: {a}
    parameters: {{weight: 1.0}}
  - model: {b}
    parameters: {{weight: 0.6}}
parameters: {{nuslerp_flatten: false, nuslerp_row_wise: true}}
""",
        "task_arithmetic": f"""
merge_method: task_arithmetic
base_model: {base}
models:
  - model: {a}
    parameters: {{weight: 1.0}}
  - model: {b}
    parameters:
      weight: [0.75, 0.25]
parameters: {{lambda: 0.9}}
dtype: bfloat16
""",
        "ties": f"""
merge_method: ties
base_model: {base}
models:
  - model: {a}
    parameters: {{weight: 1.0, density: 0.5}}
  - model: {b}
    parameters:
      weight: 0.75
      density: [{{filter: mlp, value: 0.3}}, {{value: 0.7}}]
dtype: bfloat16
""",
        "breadcrumbs": f"""
merge_method: breadcrumbs
base_model: {base}
models:
  - model: {a}
    parameters: {{weight: 1.0, density: 0.8, gamma: 0.05}}
  - model: {b}
    parameters: {{weight: 0.5, density: 0.7}}
dtype: bfloat16
""",
        "breadcrumbs_ties": f"""
merge_method: breadcrumbs_ties
base_model: {base}
models:
  - model: {a}
    parameters: {{weight: 1.0, density: 0.8, gamma: 0.05}}
  - model: {b}
    parameters: {{weight: 0.5, density: 0.7}}
parameters: {{normalize: true}}
""",
        "model_stock": f"""
merge_method: model_stock
base_model: {base}
models:
  - model: {a}
  - model: {b}
""",
        "karcher": f"""
merge_method: karcher
models:
  - model: {a}
  - model: {b}
  - model: {base}
""",
        "passthrough": f"""
merge_method: passthrough
slices:
  - sources: [{{model: {base4}, layer_range: [0, 3]}}]
  - sources: [{{model: {ft4}, layer_range: [1, 4]}}]
  - sources: [{{model: {base4}, layer_range: [3, 4]}}]
dtype: bfloat16
""",
        "dare_ties": f"""
merge_method: dare_ties
base_model: {base}
models:
  - model: {a}
    parameters: {{weight: 1.0, density: 0.5}}
  - model: {b}
    parameters: {{weight: 0.75, density: 0.6}}
dtype: bfloat16
""",
    }


DETERMINISTIC = [
    "linear",
    "linear_out_dtype",
    "slerp",
    "nuslerp",
    "nuslerp_row_wise",
    "task_arithmetic",
    "ties",
    "breadcrumbs",
    "breadcrumbs_ties",
    "model_stock",
    "karcher",
    "passthrough",
]


MOE_METHODS = ("linear", "ties", "slerp")


def moe_recipe(method: str, m: dict[str, Path]) -> str:
    """The three merges of issue #12 over an MoE family (tests.support.moe_builders.moe_family): linear 1.0 : 0.75, TIES
    over the base, SLERP between the fine-tunes."""
    base, a, b = m["base"], m["ft_a"], m["ft_b"]
    if method == "linear":
        return (
            f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1.0}}\n"
            f"  - model: {b}\n    parameters: {{weight: 0.75}}\ndtype: bfloat16\n"
        )
    if method == "ties":
        return (
            f"merge_method: ties\nbase_model: {base}\nmodels:\n"
            f"  - model: {a}\n    parameters: {{weight: 1.0, density: 0.5}}\n"
            f"  - model: {b}\n    parameters: {{weight: 0.75, density: 0.5}}\ndtype: bfloat16\n"
        )
    if method == "slerp":
        return (
            f"merge_method: slerp\nbase_model: {a}\nmodels:\n  - model: {a}\n  - model: {b}\nparameters: {{t: 0.4}}\n"
        )
    raise ValueError(method)
