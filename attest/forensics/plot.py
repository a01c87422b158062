"""`--plot`: a PNG of what detect found, per layer (SPEC.md §6.4).

Top: each participant's coefficient per layer, attention tensors (solid) and MLP tensors (dashed) apart (a slerp
gradient filtered by module shows as two different lines), with its model-wide value and 95% interval. Bottom: the
unexplained fraction per layer, attention and MLP apart, with the residual floor: a pure merge lies on the floor, a
merge plus training stands above it in every layer. Participants are named as in the text output
(`display_names`).
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from attest.atomic import atomic_write_bytes
from attest.forensics.pairing import layer_of
from attest.forensics.report import DetectReport, TensorRow, display_names


def module_group(name: str) -> str:
    """attention, mlp (experts included) or other, from a tensor name."""
    if ".self_attn." in name or ".attn." in name or ".attention." in name:
        return "attention"
    if ".mlp." in name or ".experts." in name or ".block_sparse_moe." in name:
        return "mlp"
    return "other"


def _per_layer(rows: Sequence[TensorRow], j: int | None) -> dict[str, list[tuple[int, float]]]:
    """group -> [(layer, size-weighted coefficient j, or unexplained fraction when j is None)]."""
    acc: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        key = layer_of(r.name)
        if key is None:
            continue
        if j is None:
            val = float(r.unexplained)
        else:
            c = r.coefficients[j] if j < len(r.coefficients) else None
            if c is None:
                continue
            val = c * r.numel
        slot = acc[(module_group(r.name), key.index)]
        slot[0] += val
        slot[1] += r.numel
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (group, layer), (num, den) in sorted(acc.items(), key=lambda kv: kv[0][1]):
        if den > 0:
            out[group].append((layer, num / den))
    return out


def plot_coefficients(report: DetectReport, out: Path) -> Path:
    """Draw the per-layer coefficients and unexplained fractions, attention and MLP apart."""
    import matplotlib  # lazy: matplotlib only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = display_names(report)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 7), dpi=110, sharex=True, height_ratios=(3, 2))
    styles = {"attention": "-", "mlp": "--", "other": ":"}
    rows = [r for r in report.tensors if r.coefficients and any(c is not None for c in r.coefficients)]
    xs_all: list[int] = []
    for j, coef in enumerate(report.coefficients):
        color = None
        for group, pts in _per_layer(rows, j).items():
            xs = [p[0] for p in pts]
            xs_all += xs
            (line,) = ax.plot(
                xs, [p[1] for p in pts], styles[group], marker="o", color=color,
                label=f"{names.get(coef.candidate, coef.candidate)} ({group})",
            )  # fmt: skip
            color = line.get_color()
        ax.axhline(coef.value, linestyle=(0, (1, 3)), linewidth=0.8, color=color)
        if coef.ci_low is not None and coef.ci_high is not None and xs_all:
            ax.fill_between([min(xs_all), max(xs_all)], coef.ci_low, coef.ci_high, alpha=0.12, color=color)
    ax.set_ylabel("coefficient")
    title = f"{names.get(report.model, Path(report.model).name)}: {report.verdict}"
    if report.merge_test is not None:
        title += f" (merge share {report.merge_test.merge_share:.2f}, critical {report.merge_test.critical:.2f})"
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="x-small")
    for group, pts in _per_layer(report.tensors, None).items():
        ax2.plot([p[0] for p in pts], [max(p[1], 1e-7) for p in pts], styles[group], marker="s", label=group)
    if report.residual is not None:
        ax2.axhline(report.residual.floor, color="grey", linewidth=0.8, label="rounding floor")
    ax2.set_yscale("log")
    ax2.set_ylabel("unexplained fraction")
    ax2.set_xlabel("layer")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.grid(alpha=0.3)
    ax2.legend(loc="best", fontsize="x-small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return out
