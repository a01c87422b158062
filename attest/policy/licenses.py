"""The licenses a model declares, and the `licenses` rule over them (SPEC.md section 7.1).

Every declared value is checked, and anything attest cannot read as one plain license id fails the rule: a card
that cannot be read, a value that is not a string, a list longer than MAX_LICENSES (refused, never cut short), an
SPDX expression, or `other` with a free-text `license_name` (a name is not an id, so `license_name: mit` proves
nothing). The card is read as huggingface_hub reads it (attest/publish/card.py), so attest checks what the Hub shows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attest.errors import AttestError
from attest.policy.model_card import read_card
from attest.strict_json import reject_duplicate_keys
from attest.trust.policy_file import LICENSE_ID, Licenses
from attest.verify.report import RuleResult

MAX_LICENSES = 16
"""Licenses one file may declare; more is refused (a real card names one, rarely two or three)."""
MAX_CONFIG_BYTES = 4 * 1024 * 1024
_PLAIN = re.compile(LICENSE_ID)


@dataclass
class DeclaredLicenses:
    """What a model folder declares: plain license ids with where each was found, and what could not be read."""

    found: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _values(value: Any, where: str, out: DeclaredLicenses) -> None:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) > MAX_LICENSES:
        out.problems.append(f"{where} lists {len(value)} licenses, more than {MAX_LICENSES} (refused, not cut short)")
        return
    if not items:
        out.problems.append(f"{where} is an empty list")
    for item in items:
        if not isinstance(item, str):
            out.problems.append(f"{where} has a value that is not a license id (a {type(item).__name__})")
        elif not _PLAIN.fullmatch(item) or len(item) > 64:
            out.problems.append(f"{where} {item[:80]!r} is not a plain license id (no expressions, spaces or marks)")
        else:
            out.found.append((item, where))


def declared_licenses(folder: Path) -> DeclaredLicenses:
    """Every license the card's front matter (`license`) and config.json (`license`) declare."""
    out = DeclaredLicenses()
    try:
        card = read_card(folder)
    except AttestError as exc:
        card = None
        out.problems.append(f"model card unreadable, its licenses cannot be checked: {exc}")
    if card is not None:
        if "license" in card.front:
            _values(card.front["license"], "README.md front matter license", out)
        name = card.front.get("license_name")
        if name is not None:
            shown = repr(name[:80]) if isinstance(name, str) else f"a {type(name).__name__}"
            out.notes.append(f"license_name {shown} is a free-text name, not a license id: not checked as one")
    cfg = folder / "config.json"
    if cfg.is_symlink() or (cfg.exists() and not cfg.is_file()):
        out.problems.append("config.json is not a regular file: its license cannot be checked")
    elif cfg.is_file():
        try:
            if cfg.stat().st_size > MAX_CONFIG_BYTES:
                raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
            doc: Any = json.loads(cfg.read_text(encoding="utf-8"), object_pairs_hook=reject_duplicate_keys)
        except (OSError, ValueError, RecursionError) as exc:
            out.problems.append(f"config.json unreadable, its license cannot be checked ({str(exc)[:120]})")
        else:
            if isinstance(doc, dict) and "license" in doc:
                _values(doc["license"], "config.json license", out)
    return out


def licenses_rule(folder: Path, rule: Licenses) -> RuleResult:
    """Passes when at least one license is declared and every declared value is a plain id on the allow-list."""
    allowed = {a.lower() for a in rule.allow}
    result = RuleResult(rule="licenses", title=f"license one of {', '.join(rule.allow)}", passed=True)
    declared = declared_licenses(folder)
    for p in declared.problems:
        result.passed = False
        result.evidence.append(f"{p} (fails closed)")
    if not declared.found and not declared.problems:
        result.passed = False
        result.evidence.append("no license declared (README.md front matter `license:` or config.json)")
    for lic, where in declared.found:
        if lic.lower() in allowed:
            result.evidence.append(f"{lic} ({where}) is allowed")
        else:
            result.passed = False
            result.evidence.append(f"{lic} ({where}) is not on the allow-list")
    result.evidence.extend(declared.notes)
    return result
