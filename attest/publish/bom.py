"""A CycloneDX 1.6 ML-BOM of a verified lineage (SPEC.md section 7.4).

cyclonedx-python-lib cannot write `modelCard` yet, so the JSON is built here and validated in the tests against the
official 1.6 schema. Hashes are attest identity roots, not file hashes: every component says so in a property.
Only what the verifier established goes in: a step's formulation comes from a statement signed by a trusted signer;
a model without one is a leaf component with its verdict.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attest import __version__
from attest.policy.licenses import declared_licenses
from attest.verify.lineage import StepRecord, VerifiedLineage, nodes
from attest.verify.report import LineageNode

SPEC_VERSION = "1.6"
ROOT_NOTE = (
    "SHA-256 here is an attest-identity/v1 model root: a tensor-level Merkle root over the weights plus the other "
    "files of the folder (attest SPEC.md section 1), independent of sharding; it is not the hash of any single file. "
    "Recompute with `attest hash DIR`."
)
SPDX_IDS = {
    "apache-2.0": "Apache-2.0",
    "mit": "MIT",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "cc-by-4.0": "CC-BY-4.0",
    "cc-by-sa-4.0": "CC-BY-SA-4.0",
    "cc-by-nc-4.0": "CC-BY-NC-4.0",
    "cc0-1.0": "CC0-1.0",
    "gpl-3.0": "GPL-3.0-only",
    "lgpl-3.0": "LGPL-3.0-only",
    "mpl-2.0": "MPL-2.0",
    "openrail": None,
}


def _ref(digest: str) -> str:
    return f"model:sha256:{digest}"


def _prop(name: str, value: object) -> dict[str, str]:
    return {"name": f"attest:{name}", "value": value if isinstance(value, str) else json.dumps(value)}


def _licenses(folder: Path) -> list[dict[str, Any]]:
    out = []
    for lic, _ in declared_licenses(folder).found:
        spdx = SPDX_IDS.get(lic.lower())
        out.append({"license": {"id": spdx} if spdx else {"name": lic}})
    return out


def _architecture(folder: Path) -> str | None:
    cfg = folder / "config.json"
    try:
        doc = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() and cfg.stat().st_size < 1 << 22 else None
    except (OSError, ValueError):
        return None
    archs = doc.get("architectures") if isinstance(doc, dict) else None
    return str(archs[0]) if isinstance(archs, list) and archs else None


def _model_card(node: LineageNode, rec: StepRecord | None, architecture: str | None) -> dict[str, Any] | None:
    props = []
    params: dict[str, Any] = {}
    if architecture:
        params["architectureFamily"] = "transformer"
        params["modelArchitecture"] = architecture
    if rec is not None and node.step is not None:
        build = rec.statement.predicate.buildDefinition
        props.append(_prop("step", node.step))
        props.append(_prop("buildType", build.buildType))
        ext = build.externalParameters
        cfg = ext.get("mergekit_config")
        if isinstance(cfg, dict):
            parsed = cfg.get("parsed")
            if isinstance(parsed, dict) and parsed.get("merge_method"):
                props.append(_prop("merge_method", str(parsed["merge_method"])))
            if isinstance(cfg.get("yaml"), str):
                props.append(_prop("mergekit_config", cfg["yaml"]))
        hyper = ext.get("hyperparameters")
        for k, v in sorted(hyper.items() if isinstance(hyper, dict) else []):
            props.append(_prop(f"hyperparameter:{k}", v))
        datasets = [d for d in build.resolvedDependencies or [] if d.role == "dataset"]
        if datasets:
            params["datasets"] = [{"ref": _data_ref(d.digest or {}, d.name)} for d in datasets]
        if node.step in ("finetune", "distill"):
            params["approach"] = {"type": "self-supervised" if node.step == "distill" else "supervised"}
    if not props and not params:
        return None
    card: dict[str, Any] = {}
    if params:
        card["modelParameters"] = params
    if props:
        card["properties"] = props
    return card


def _data_ref(digest: dict[str, str], name: str | None) -> str:
    return f"data:sha256:{digest.get('sha256', name or 'unknown')}"


def _component(node: LineageNode, lineage: VerifiedLineage, *, with_ref: bool, depth: int = 0) -> dict[str, Any]:
    rec = lineage.steps.get(node.digest)
    rec = rec if rec is not None and rec.trusted else None
    comp: dict[str, Any] = {"type": "machine-learning-model", "name": node.name}
    if with_ref:
        comp["bom-ref"] = _ref(node.digest)
    comp["hashes"] = [{"alg": "SHA-256", "content": node.digest}]
    is_model = node.digest == lineage.report.model_root
    if is_model:
        lic = _licenses(lineage.folder)
        if lic:
            comp["licenses"] = lic
    props = [_prop("identity-root", ROOT_NOTE), _prop("verdict", node.verdict)]
    subject = next((s for s in rec.statement.subject if s.digest.get("sha256") == node.digest), None) if rec else None
    annotations = (subject.annotations or {}) if subject else {}
    weights = lineage.report.weights_root if is_model else annotations.get("weights_root")
    if weights:
        props.append(_prop("weights_root", str(weights)))
    if annotations.get("files_root"):
        props.append(_prop("files_root", str(annotations["files_root"])))
    if node.role:
        props.append(_prop("role", node.role))
    if node.signers:
        props.append(_prop("signers", ", ".join(node.signers)))
    card = _model_card(node, rec, _architecture(lineage.folder) if is_model else None)
    if card is not None:
        comp["modelCard"] = card
    if node.parents and depth < 64:
        comp["pedigree"] = {
            "ancestors": [_component(p, lineage, with_ref=False, depth=depth + 1) for p in node.parents]
        }
    comp["properties"] = props
    return comp


def build_bom(lineage: VerifiedLineage) -> dict[str, Any]:
    """The BOM as a JSON-ready dict: the model as metadata.component, every ancestor and dataset as a component,
    the lineage as dependencies, each attested step as a formula."""
    report = lineage.report
    root = report.lineage or LineageNode(name=Path(report.model).name, digest=report.model_root, verdict="unattested")
    all_nodes = list(nodes(root))
    components: list[dict[str, Any]] = []
    dependencies: list[dict[str, Any]] = []
    formulation: list[dict[str, Any]] = []
    datasets: dict[str, dict[str, Any]] = {}
    for n in all_nodes:
        if n is not root:
            flat = _component(n, lineage, with_ref=True)
            flat.pop("pedigree", None)
            components.append(flat)
        rec = lineage.steps.get(n.digest)
        depends = [_ref(p.digest) for p in n.parents]
        if rec is not None and rec.trusted and n.step is not None:
            build = rec.statement.predicate.buildDefinition
            for d in build.resolvedDependencies or []:
                if d.role != "dataset":
                    continue
                ref = _data_ref(d.digest or {}, d.name)
                depends.append(ref)
                datasets.setdefault(
                    ref,
                    {
                        "type": "data",
                        "bom-ref": ref,
                        "name": d.name or "dataset",
                        "hashes": [{"alg": "SHA-256", "content": d.sha256}] if d.sha256 else [],
                        "data": [{"type": "dataset", "name": d.name or "dataset"}],
                    },
                )
            meta = rec.statement.predicate.runDetails.metadata
            fprops = [_prop("step", n.step), _prop("buildType", build.buildType), _prop("subject", n.digest)]
            fprops.append(_prop("externalParameters", build.externalParameters))
            if build.internalParameters:
                fprops.append(_prop("internalParameters", build.internalParameters))
            if meta is not None and meta.invocationId:
                fprops.append(_prop("invocationId", meta.invocationId))
            fprops.append(_prop("builder", rec.statement.predicate.runDetails.builder.id))
            formulation.append({"bom-ref": f"formula:sha256:{n.digest}", "properties": fprops})
        dependencies.append({"ref": _ref(n.digest), "dependsOn": list(dict.fromkeys(depends))})
    for ref in datasets:
        dependencies.append({"ref": ref, "dependsOn": []})
    model = _component(root, lineage, with_ref=True)
    model["properties"].append(_prop("verified", report.verified))
    for rule in report.policy.rules if report.policy is not None else []:
        if rule.rule == "training_replayed":  # which segments of the training transcript were re-executed
            model["properties"].append(_prop("training_replayed", {"passed": rule.passed, "evidence": rule.evidence}))
    bom: dict[str, Any] = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'https://attest.dev/bom/' + report.model_root)}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "attest", "version": __version__}]},
            "component": model,
        },
        "components": components + list(datasets.values()),
        "dependencies": dependencies,
    }
    if formulation:
        bom["formulation"] = formulation
    return bom
