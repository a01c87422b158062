"""A PNG of the fitted coefficients per layer: a flat line is one merge, a slope is a gradient merge."""

from __future__ import annotations

from pathlib import Path

from attest.forensics.report import DetectReport


def plot_coefficients(report: DetectReport, out: Path) -> Path:
    """Draw each participant's per-layer coefficient with its model-wide value and 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    xs = [p.layer for p in report.layers]
    for j, coef in enumerate(report.coefficients):
        label = Path(coef.candidate).name or coef.candidate
        if xs:
            (line,) = ax.plot(xs, [p.values[j] for p in report.layers], marker="o", label=label)
            color = line.get_color()
        else:
            color = None
        ax.axhline(coef.value, linestyle="--", linewidth=0.8, color=color)
        if coef.ci_low is not None and coef.ci_high is not None and xs:
            ax.fill_between([min(xs), max(xs)], coef.ci_low, coef.ci_high, alpha=0.15, color=color)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("coefficient")
    ax.set_title(f"{Path(report.model).name}: {report.verdict}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out
