"""The audit report: one self-contained HTML page (inline CSS and SVG, no scripts, no external assets) and the same
content as JSON (`schemas/audit-report.schema.json`), for people who sign off on a model without running attest.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from attest import __version__
from attest.policy.model_card import step_from_statement
from attest.statements.models import ROLES, ResourceDescriptor
from attest.verify.lineage import VerifiedLineage, head_step, nodes
from attest.verify.report import LineageNode, PolicyResult, Problem

REPORT_FORMAT = "https://attest.dev/audit-report/v1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportParent(_Model):
    name: str
    digest: str
    role: str


class ReportDataset(_Model):
    name: str
    sha256: str | None = None


class ReportCode(_Model):
    """The code a step ran, as recorded (`attest record --code DIR`): git commit and whether the tree was dirty."""

    name: str
    uri: str | None = None
    commit: str | None = Field(default=None, description="digest.gitCommit of the code dependency")
    dirty: bool | None = Field(default=None, description="Uncommitted changes when the step ran (unknown: null)")


class ReportStep(_Model):
    """One attested step of the lineage (a statement signed by a trusted signer)."""

    name: str
    digest: str = Field(description="sha256 model root of the step's output")
    kind: str
    signers: list[str]
    parents: list[ReportParent]
    datasets: list[ReportDataset] = Field(default_factory=list)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    recipe: str | None = Field(default=None, description="mergekit YAML of a merge, as recorded")
    code: list[ReportCode] = Field(default_factory=list)
    seed: int | None = Field(default=None, description="internalParameters.seed")
    device: str | None = Field(default=None, description="internalParameters.device")


class ReportRoot(_Model):
    name: str
    digest: str
    verdict: str


class AuditReport(_Model):
    format: Literal["https://attest.dev/audit-report/v1"] = "https://attest.dev/audit-report/v1"
    generated_at: str
    attest_version: str
    model: str
    model_root: str
    weights_root: str
    verified: bool
    signers: list[str] = Field(description="Everyone whose trusted signature the lineage carries")
    roots: list[ReportRoot] = Field(description="Where the lineage ends: allow-listed roots or unattested models")
    lineage: LineageNode | None
    claimed_lineage: LineageNode | None = Field(
        default=None,
        description="When no statement names the folder as it is: the lineage its own signed statement claims "
        "(the head marked failed), drawn beside the verdict",
    )
    steps: list[ReportStep]
    policy: PolicyResult | None = None
    problems: list[Problem] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def build_report(lineage: VerifiedLineage, roots: dict[str, str] | None = None) -> AuditReport:
    """`roots`: the allow-listed model roots (digest -> name) the claimed lineage of a changed folder ends at."""
    r = lineage.report
    all_nodes = list(nodes(r.lineage)) if r.lineage else []
    claimed = claimed_lineage(lineage, roots or {})
    steps = []
    seen = set()
    for n in [*all_nodes, *(nodes(claimed) if claimed else [])]:
        rec = lineage.steps.get(n.digest)
        if rec is None or not rec.trusted or n.step is None or n.digest in seen:
            continue
        seen.add(n.digest)
        view = step_from_statement(rec)
        internal = rec.statement.predicate.buildDefinition.internalParameters or {}
        seed, device = internal.get("seed"), internal.get("device")
        steps.append(
            ReportStep(
                name=n.name,
                digest=n.digest,
                kind=n.step,
                signers=n.signers,
                parents=[
                    ReportParent(name=p.display, digest=p.digest, role=p.role) for p in view.parents if p.role in ROLES
                ],
                datasets=[ReportDataset(name=name, sha256=digest or None) for name, digest in view.datasets],
                hyperparameters=view.hyperparameters,
                recipe=view.recipe_yaml,
                code=[_code(d) for d in rec.statement.dependencies("code")],
                seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
                device=device if isinstance(device, str) else None,
            )
        )
    return AuditReport(
        generated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        attest_version=__version__,
        model=r.model,
        model_root=r.model_root,
        weights_root=r.weights_root,
        verified=r.verified,
        signers=sorted({s for n in all_nodes for s in n.signers}),
        roots=[ReportRoot(name=n.name, digest=n.digest, verdict=n.verdict) for n in all_nodes if not n.parents],
        lineage=r.lineage,
        claimed_lineage=claimed,
        steps=steps,
        policy=r.policy,
        problems=r.problems,
        notes=r.notes,
    )


def _code(d: ResourceDescriptor) -> ReportCode:
    dirty = (d.annotations or {}).get("dirty")
    return ReportCode(
        name=d.name or d.uri or "code",
        uri=d.uri,
        commit=(d.digest or {}).get("gitCommit"),
        dirty=dirty if isinstance(dirty, bool) else None,
    )


def claimed_lineage(lineage: VerifiedLineage, roots: dict[str, str]) -> LineageNode | None:
    """The lineage a changed folder's own statement claims, rebuilt from the signed statements alone (nothing is
    re-hashed): the head is `failed` (the folder is not what it claims), an ancestor is `verified` when its
    statement carries a trusted signature, `trusted_root` when allow-listed, else `unattested`. None when a statement
    names the folder as it is."""
    head, current = head_step(lineage.steps, lineage.report.model_root)
    if head is None or current:
        return None

    def build(digest: str, name: str, role: str | None, path: tuple[str, ...]) -> LineageNode:
        rec = lineage.steps.get(digest)
        node = LineageNode(name=name, digest=digest, role=role, verdict="unattested")
        if (rec is None or not rec.trusted) and digest in roots:
            node.name, node.verdict = roots[digest], "trusted_root"
            return node
        if rec is None or digest in path or len(path) > 64:
            return node
        view = step_from_statement(rec)
        node.step, node.signers = view.kind, rec.signers if rec.trusted else []
        node.verdict = "verified" if rec.trusted else "unattested"
        node.parents = [build(p.digest, p.display, p.role, (*path, digest)) for p in view.parents if p.role in ROLES]
        return node

    root = build(head.digest, head.statement.subject[0].name, None, ())
    root.verdict = "failed"
    return root


# --- HTML -------------------------------------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d232b}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
.card{background:#fff;border:1px solid #d5d9e0;border-radius:8px;padding:16px 20px;margin:12px 0}
.verdict{display:inline-block;font-weight:700;font-size:20px;padding:6px 16px;border-radius:6px;color:#fff}
.ok{background:#1f7a3a}.bad{background:#b42318}
.pass{color:#1f7a3a;font-weight:700}.fail{color:#b42318;font-weight:700}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;vertical-align:top;padding:6px 8px;border-top:1px solid #e6e8ec}
th{background:#f0f2f5;font-size:13px;text-transform:uppercase;letter-spacing:.03em}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;word-break:break-all}
pre{background:#f6f8fa;border:1px solid #e6e8ec;border-radius:6px;padding:10px;overflow:auto;font-size:12.5px}
ul.evidence{margin:4px 0 0 0;padding-left:18px}ul.evidence li{margin:2px 0}
.muted{color:#5b6472;font-size:13px}svg{max-width:100%;height:auto}
"""

_FILL = {"verified": "#e7f4ea", "trusted_root": "#e6effb", "unattested": "#fde8e7", "failed": "#fde8e7"}
_STROKE = {"verified": "#1f7a3a", "trusted_root": "#1d5fbf", "unattested": "#b42318", "failed": "#b42318"}
_BOX_W, _BOX_H, _GAP_X, _GAP_Y = 230, 58, 30, 70


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _layout(root: LineageNode) -> tuple[dict[str, tuple[int, int]], dict[str, LineageNode], list[tuple[str, str, str]]]:
    """Layered layout of the lineage DAG: level = longest path from the model, order = first depth-first visit."""
    level: dict[str, int] = {}
    by_digest: dict[str, LineageNode] = {}
    order: list[str] = []
    edges: list[tuple[str, str, str]] = []

    def visit(n: LineageNode, depth: int, path: tuple[str, ...]) -> None:
        if n.digest in path or depth > 32:
            return
        if n.digest not in by_digest:
            by_digest[n.digest] = n
            order.append(n.digest)
        level[n.digest] = max(level.get(n.digest, 0), depth)
        for p in n.parents:
            if (n.digest, p.digest, p.role or "") not in edges:
                edges.append((n.digest, p.digest, p.role or ""))
            visit(p, depth + 1, (*path, n.digest))

    visit(root, 0, ())
    rows: dict[int, list[str]] = {}
    for d in order:
        rows.setdefault(level[d], []).append(d)
    pos = {}
    width = max(len(r) for r in rows.values())
    for lv, ds in rows.items():
        offset = (width - len(ds)) * (_BOX_W + _GAP_X) / 2
        for i, d in enumerate(ds):
            pos[d] = (int(20 + offset + i * (_BOX_W + _GAP_X)), int(20 + lv * (_BOX_H + _GAP_Y)))
    return pos, by_digest, edges


def lineage_svg(root: LineageNode | None, marker: str = "arrow") -> str:
    """The lineage graph as inline SVG: the model on top, its parents below, edges labelled with the role."""
    if root is None:
        return "<p>No lineage.</p>"
    pos, nodes, edges = _layout(root)
    w = max(x for x, _ in pos.values()) + _BOX_W + 90
    h = max(y for _, y in pos.values()) + _BOX_H + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="lineage graph">',
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5b6472"/></marker></defs>',
    ]
    for child, parent, role in edges:
        cx, cy = pos[child]
        px, py = pos[parent]
        x1: float
        y1: float
        x2: float
        y2: float
        lx: float
        ly: float
        if py - cy > _BOX_H + _GAP_Y:  # skips a level: curve around the boxes in between, on the right
            x1, y1, x2, y2 = px + _BOX_W, py + _BOX_H / 2, cx + _BOX_W, cy + _BOX_H / 2
            bend = max(px, cx) + _BOX_W + 60
            out.append(
                f'<path d="M{x1},{y1} C{bend},{y1} {bend},{y2} {x2 + 2},{y2}" fill="none" stroke="#5b6472" '
                f'stroke-width="1.5" marker-end="url(#{marker})"/>'
            )
            lx, ly = bend - 10, (y1 + y2) / 2
        else:
            x1, y1, x2, y2 = px + _BOX_W / 2, py, cx + _BOX_W / 2, cy + _BOX_H
            out.append(
                f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2 + 2}" stroke="#5b6472" stroke-width="1.5" '
                'marker-end="url(#arrow)"/>'
            )
            lx, ly = (x1 + x2) / 2 + 4, (y1 + y2) / 2
        if role:
            out.append(f'<text x="{lx}" y="{ly}" font-size="11" fill="#5b6472">{_e(role)}</text>')
    for d, (x, y) in pos.items():
        n = nodes[d]
        name = n.name if len(n.name) <= 30 else n.name[:29] + "…"
        what = n.step or ("allow-listed root" if n.verdict == "trusted_root" else n.verdict)
        signed = f" · {', '.join(n.signers)}" if n.signers else ""
        sub = f"{what}{signed}"
        sub = sub if len(sub) <= 36 else sub[:35] + "…"
        out.append(
            f'<g><rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="7" fill="{_FILL[n.verdict]}" '
            f'stroke="{_STROKE[n.verdict]}" stroke-width="1.6"/>'
            f'<text x="{x + 10}" y="{y + 19}" font-size="13" font-weight="700" fill="#1d232b">{_e(name)}</text>'
            f'<text x="{x + 10}" y="{y + 35}" font-size="11.5" fill="#333">{_e(sub)}</text>'
            f'<text x="{x + 10}" y="{y + 50}" font-size="10.5" font-family="monospace" fill="#5b6472">'
            f"sha256:{_e(d[:20])}…</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def render_html(r: AuditReport) -> str:
    """The report as one HTML document; every value from the folder is escaped."""
    verdict = (
        '<span class="verdict ok">VERIFIED</span>' if r.verified else '<span class="verdict bad">NOT VERIFIED</span>'
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">',
        f"<title>attest audit report: {_e(r.model)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>Audit report: {_e(r.model)}</h1>",
        f'<p class="muted">Generated {_e(r.generated_at)} by attest {_e(r.attest_version)}. Every hash was '
        "re-derived from the folder's bytes and every statement checked against the trusted signers.</p>",
        f'<div class="card" id="verdict">{verdict}',
    ]
    if r.policy is not None:
        passed = sum(x.passed for x in r.policy.rules)
        parts.append(
            f"<p>Policy <b>{_e(r.policy.name or r.policy.policy)}</b>: {passed} of {len(r.policy.rules)} "
            "rules passed.</p>"
        )
    if r.claimed_lineage is not None:
        parts.append(
            '<div id="claimed-lineage"><p><b>What the folder claims to be</b> (its own signed statements; the folder '
            "does not match them, so none of this is verified):</p>"
            f"{lineage_svg(r.claimed_lineage, marker='arrow-claimed')}</div>"
        )
    parts.append("</div>")
    parts += [
        "<h2>Identity</h2>",
        '<div class="card"><table>',
        f'<tr><th>model root</th><td class="mono" id="model-root">{_e(r.model_root)}</td></tr>',
        f'<tr><th>weights root</th><td class="mono">{_e(r.weights_root)}</td></tr>',
        "</table></div>",
        "<h2>Lineage</h2>",
        f'<div class="card" id="lineage">{lineage_svg(r.lineage)}',
        '<p class="muted">Green: attested step, signed by a trusted signer. Blue: allow-listed root. Red: no trusted '
        "statement.</p></div>",
    ]
    if r.policy is not None:
        parts += [
            "<h2>Policy rules</h2>",
            '<div class="card"><table id="rules">',
            "<tr><th>rule</th><th>verdict</th><th>evidence</th></tr>",
        ]
        for rule in r.policy.rules:
            cls, word = ("pass", "PASS") if rule.passed else ("fail", "FAIL")
            ev = "".join(f"<li>{_e(x)}</li>" for x in rule.evidence)
            parts.append(
                f'<tr><td><b>{_e(rule.rule)}</b><br><span class="muted">{_e(rule.title)}</span></td>'
                f'<td class="{cls}">{word}</td><td><ul class="evidence">{ev}</ul></td></tr>'
            )
        parts.append("</table></div>")
    if r.problems:
        parts += ["<h2>Problems</h2>", '<div class="card"><ul class="evidence">']
        parts += [f'<li><b class="fail">{_e(p.code)}</b>: {_e(p.message)}</li>' for p in r.problems]
        parts.append("</ul></div>")
    parts += [
        "<h2>Roots and signers</h2>",
        '<div class="card"><table><tr><th>root</th><th>digest</th><th>verdict</th></tr>',
    ]
    parts += [
        f'<tr><td>{_e(x.name)}</td><td class="mono">{_e(x.digest)}</td><td>{_e(x.verdict)}</td></tr>' for x in r.roots
    ]
    parts.append(f"</table><p>Signers: {_e(', '.join(r.signers) or 'none trusted')}</p></div>")
    if r.steps:
        parts.append("<h2>Steps</h2>")
    for s in r.steps:
        parts.append(
            f'<div class="card"><b>{_e(s.name)}</b>: {_e(s.kind)}, signed by {_e(", ".join(s.signers))}'
            f'<br><span class="mono">sha256:{_e(s.digest)}</span><ul class="evidence">'
        )
        parts += [
            f'<li>{_e(p.role)}: {_e(p.name)} <span class="mono">sha256:{_e(p.digest[:16])}…</span></li>'
            for p in s.parents
        ]
        parts += [f'<li>dataset: {_e(d.name)} <span class="mono">{_e(d.sha256 or "")}</span></li>' for d in s.datasets]
        for c in s.code:
            dirty = {True: "dirty: uncommitted changes", False: "clean", None: "dirty flag not recorded"}[c.dirty]
            parts.append(
                f'<li>code: {_e(c.name)} <span class="mono">{_e(c.commit or "no commit recorded")}</span> '
                f"({dirty}){f' <span class=mono>{_e(c.uri)}</span>' if c.uri else ''}</li>"
            )
        run = [f"seed {s.seed}" if s.seed is not None else "seed not recorded", f"device {s.device or 'not recorded'}"]
        parts.append(f"<li>run: {_e(', '.join(run))}</li>")
        if s.hyperparameters:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(s.hyperparameters.items()))
            parts.append(f"<li>hyperparameters: {_e(shown)}</li>")
        parts.append("</ul>")
        if s.recipe:
            parts.append(f"<pre>{_e(s.recipe)}</pre>")
        parts.append("</div>")
    if r.notes:
        parts += ["<h2>Notes</h2>", '<div class="card"><ul class="evidence">']
        parts += [f"<li>{_e(n)}</li>" for n in r.notes]
        parts.append("</ul></div>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
