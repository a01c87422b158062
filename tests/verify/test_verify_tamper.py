"""The tamper suite of `attest verify`: each case with its expected verdict, no false accept, no false reject.

A real chain is built once: a tiny base (an allow-listed root), two real fine-tunes recorded as finetune steps, and a
real mergekit linear merge of them recorded as a merge step, all signed by a builder key.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from attest.identity import hash_model
from attest.lineage.store import bundle_path, load_bundle, write_bundle
from attest.policy import verify_model
from attest.signing import load_private_key, sign_envelope
from attest.statements.builders import model_dependency, provenance_statement
from attest.statements.models import Subject
from attest.statements.parse import statement_bytes
from attest.verify import VerifyOptions, build_trust
from examples.reshard import reshard
from tests.support.cli import attest_process, run_attest


def _verify(folder: Path, signed_chain: dict[str, Path], **opts: object) -> tuple[bool, set[str], str]:
    trust = build_trust(signed_chain["policy"])
    report = verify_model(folder, trust, VerifyOptions(**opts))  # type: ignore[arg-type]
    text = " | ".join(p.message for p in report.problems)
    return report.verified, {p.code for p in report.problems}, text


def _copy(signed_chain: dict[str, Path], tmp_path: Path) -> Path:
    dst = tmp_path / "merged"
    shutil.copytree(signed_chain["merged"], dst)
    return dst


def _rewrite(path: Path, fn) -> None:
    """Load a safetensors file with the safetensors library, change it with fn(dict), save it back."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)


# --- accepted -------------------------------------------------------------------------------------------------


def test_clean_chain_verifies(signed_chain: dict[str, Path]) -> None:
    ok, _codes, text = _verify(signed_chain["merged"], signed_chain)
    assert ok, text


def test_resharded_model_verifies(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = reshard(signed_chain["merged"], tmp_path / "resharded", 3, seed=5)
    shutil.copytree(signed_chain["merged"] / ".attest", dst / ".attest", dirs_exist_ok=True)
    assert len(list(dst.glob("*.safetensors"))) == 3
    ok, _, text = _verify(dst, signed_chain)
    assert ok, text


def test_cli_verify_json_and_exit_code(signed_chain: dict[str, Path]) -> None:
    code, out, err = run_attest(["verify", signed_chain["merged"], "--policy", signed_chain["policy"], "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["verified"] is True and doc["problems"] == []
    assert doc["lineage"]["step"] == "merge" and len(doc["lineage"]["parents"]) == 2
    assert {p["parents"][0]["verdict"] for p in doc["lineage"]["parents"]} == {"trusted_root"}


# --- content tampering ----------------------------------------------------------------------------------------


def _bit_flip(t: dict) -> None:
    name = "model.layers.0.mlp.up_proj.weight"
    v = t[name].view(-1).view(__import__("torch").int16)
    v[7] ^= 1


@pytest.mark.parametrize(
    ("case", "fn", "named"),
    [
        ("bit flip", _bit_flip, "model.layers.0.mlp.up_proj.weight"),
        ("renamed", lambda t: t.__setitem__("renamed.weight", t.pop("model.norm.weight")), "renamed.weight"),
        ("dropped", lambda t: t.pop("model.norm.weight"), "model.norm.weight"),
        ("added", lambda t: t.__setitem__("extra.bias", t["model.norm.weight"].clone()), "extra.bias"),
        ("reshaped", lambda t: t.__setitem__("lm_head.weight", t["lm_head.weight"].reshape(-1)), "lm_head.weight"),
        (
            "retyped",
            lambda t: t.__setitem__("model.norm.weight", t["model.norm.weight"].view(__import__("torch").float16)),
            "model.norm.weight",
        ),
    ],
)
def test_tensor_tampering_is_caught_and_named(
    signed_chain: dict[str, Path], tmp_path: Path, case: str, fn: object, named: str
) -> None:
    dst = _copy(signed_chain, tmp_path)
    _rewrite(dst / "model.safetensors", fn)  # type: ignore[arg-type]
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok, case
    assert "content_mismatch" in codes, text
    assert named in text, text


def test_config_edit_is_caught(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["rope_theta"] = 1.0
    (dst / "config.json").write_text(json.dumps(cfg))
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok and "content_mismatch" in codes and "config.json" in text


def test_extra_file_is_caught(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    (dst / "tokenizer.json").write_text("{}")
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok and "content_mismatch" in codes and "tokenizer.json" in text


# --- signature and lineage tampering --------------------------------------------------------------------------


def test_changed_signature_bytes_rejected(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    lines = bundle_path(dst).read_text().splitlines()
    env = json.loads(lines[0])
    import base64

    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[5] ^= 0x40
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    lines[0] = json.dumps(env)
    bundle_path(dst).write_text("\n".join(lines) + "\n")
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok and "untrusted_signer" in codes, text
    assert "does not verify" in text


def test_envelope_from_another_model_swapped_in(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    other = load_bundle(signed_chain["ft_a"])
    write_bundle(dst, other)
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok
    assert "no_statement" in codes and "unrelated_statement" in codes, text


def test_signer_not_trusted(signed_chain: dict[str, Path]) -> None:
    trust = build_trust(None, (signed_chain["root"] / "stranger.key.pub",))
    report = verify_model(signed_chain["merged"], trust)
    assert not report.verified
    assert "untrusted_signer" in {p.code for p in report.problems}


def test_parent_statement_missing(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    ft_a_root = hash_model(signed_chain["ft_a"]).model_root
    kept = [
        e for e in load_bundle(dst) if ft_a_root not in json.loads(e.payload_bytes)["subject"][0]["digest"].values()
    ]
    assert len(kept) == 2
    write_bundle(dst, kept)
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok and "unattested_parent" in codes and "ft_a" in text


def test_parent_digest_mismatch(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    parents = tmp_path / "parents"
    shutil.copytree(signed_chain["ft_a"], parents / "ft_a")
    _rewrite(parents / "ft_a" / "model.safetensors", _bit_flip)
    dst = _copy(signed_chain, tmp_path)
    # The recorded file:// URI of ft_a still points at the intact copy: --parents-dir is looked at first.
    ok, codes, text = _verify(dst, signed_chain, parents_dirs=(parents,))
    assert not ok and "parent_mismatch" in codes, text


def test_cycle_rejected(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    """Two statements signed by the trusted key that name each other as parents."""
    dst = _copy(signed_chain, tmp_path)
    key = load_private_key(signed_chain["root"] / "builder.key")
    here = hash_model(dst)
    fake = "ab" * 32

    def stmt(subject: str, parent: str) -> bytes:
        s = provenance_statement(
            "merge",
            Subject(name="x", digest={"sha256": subject}, annotations={"weights_root": here.weights_root}),
            external={},
            internal={},
            dependencies=[model_dependency("p", "file:///p", parent, here.weights_root, "parent")],
            started_on="2026-11-25T00:00:00Z",
            finished_on="2026-11-25T00:00:01Z",
        )
        return statement_bytes(s)

    write_bundle(
        dst, [sign_envelope(stmt(here.model_root, fake), [key]), sign_envelope(stmt(fake, here.model_root), [key])]
    )
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok and "cycle" in codes, text


# --- hostile folders: exit 2, one line, no traceback ----------------------------------------------------------


def _cli_exit(folder: Path, signed_chain: dict[str, Path]) -> tuple[int, str]:
    done = attest_process("verify", folder, "--policy", signed_chain["policy"], env={"ATTEST_DEBUG": ""})
    assert "Traceback" not in done.stderr
    return done.returncode, done.stderr.strip()


def test_symlink_leaving_folder(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    (tmp_path / "outside.txt").write_text("secret")
    (dst / "notes.txt").symlink_to(tmp_path / "outside.txt")
    code, err = _cli_exit(dst, signed_chain)
    assert code == 2 and "notes.txt" in err and "outside" in err and len(err.splitlines()) == 1


def test_index_path_traversal(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.norm.weight": "../../etc/passwd"}})
    )
    code, err = _cli_exit(dst, signed_chain)
    assert code == 2 and "outside the folder" in err


def test_truncated_shard(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    f = dst / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    code, err = _cli_exit(dst, signed_chain)
    assert code == 2 and "model.safetensors" in err


def test_header_bomb(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    (dst / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")
    code, err = _cli_exit(dst, signed_chain)
    assert code == 2 and "exceeds" in err


def test_truncated_bundle(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    data = bundle_path(dst).read_bytes()
    bundle_path(dst).write_bytes(data[: len(data) // 2])
    code, err = _cli_exit(dst, signed_chain)
    assert code == 2 and "provenance.intoto.jsonl" in err


def test_verify_never_writes_into_the_model_folder(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in dst.rglob("*")}
    assert _verify(dst, signed_chain)[0]
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in dst.rglob("*")}
    assert before == after


def _signed(signed_chain: dict[str, Path], doc: dict) -> object:
    import json as _json

    key = load_private_key(signed_chain["root"] / "builder.key")
    return sign_envelope(_json.dumps(doc).encode(), [key])


def test_conflicting_statements_rejected(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    """A second trusted statement about the same model claiming another recipe."""
    dst = _copy(signed_chain, tmp_path)
    envs = load_bundle(dst)
    doc = json.loads(envs[0].payload_bytes)
    doc["predicate"]["buildDefinition"]["externalParameters"]["claimed"] = "distilled from a frontier model"
    write_bundle(dst, [*envs, _signed(signed_chain, doc)])  # type: ignore[list-item]
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok and "conflicting_statements" in codes, text


def test_unknown_predicate_reported_not_trusted(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    dst = _copy(signed_chain, tmp_path)
    envs = load_bundle(dst)
    doc = json.loads(envs[0].payload_bytes)
    doc["predicateType"] = "https://example.com/homegrown/v1"
    doc["predicate"] = {"claim": "homegrown"}
    write_bundle(dst, [_signed(signed_chain, doc), *envs[1:]])  # type: ignore[list-item]
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok and "unknown_predicate" in codes, text


def test_index_metadata_a_loader_reads_is_refused(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    """transformers takes `metadata.dtype` of a shard index as the load dtype; the index lies outside the roots, so a
    dtype written after signing must not verify (SPEC 1.6: only inert metadata keys)."""
    dst = reshard(signed_chain["merged"], tmp_path / "resharded", 3, seed=7)
    shutil.copytree(signed_chain["merged"] / ".attest", dst / ".attest", dirs_exist_ok=True)
    ok, _, text = _verify(dst, signed_chain)
    assert ok, text
    index = dst / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["metadata"]["dtype"] = "float16"
    index.write_text(json.dumps(doc))
    code, err = _cli_exit(dst, signed_chain)
    assert code == 2 and len(err.splitlines()) == 1
    assert "model.safetensors.index.json" in err and "'dtype'" in err


def test_transformers_sharded_index_is_accepted(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """What transformers itself writes into an index (total_size, total_parameters) is inert and accepted."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["base"])
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert "total_size" in index["metadata"]
    assert hash_model(tmp_path / "sharded").weights_root == hash_model(tiny_models["base"]).weights_root


def test_merge_parents_that_are_not_the_recipes_fail_without_replay(
    signed_chain: dict[str, Path], tmp_path: Path
) -> None:
    """A trusted merge statement whose recorded recipe names ft_a and ft_b, but whose recorded parents are ft_b and
    the base: verify flags it (recipe_parents) with no --replay and no parent folders at hand."""
    dst = _copy(signed_chain, tmp_path)
    envs = load_bundle(dst)
    doc = json.loads(envs[0].payload_bytes)
    deps = doc["predicate"]["buildDefinition"]["resolvedDependencies"]
    base = hash_model(signed_chain["base"])
    swapped = [d for d in deps if d["name"] != "ft_a"]
    swapped.append(
        model_dependency(
            "base", signed_chain["base"].resolve().as_uri(), base.model_root, base.weights_root, "base"
        ).model_dump(mode="json", exclude_none=True)
    )
    assert len(swapped) == len(deps)
    doc["predicate"]["buildDefinition"]["resolvedDependencies"] = swapped
    ft_a = hash_model(signed_chain["ft_a"]).model_root
    rest = [e for e in envs[1:] if ft_a not in json.loads(e.payload_bytes)["subject"][0]["digest"].values()]
    write_bundle(dst, [_signed(signed_chain, doc), *rest])  # type: ignore[list-item]
    ok, codes, text = _verify(dst, signed_chain)
    assert not ok and codes == {"recipe_parents"}, text
    assert "ft_a' matches no recorded parents" in text and "'base'" in text and "not a model the recipe names" in text


# --- reports from hostile lineages: bounded size, no forged lines -------------------------------------------------


def _dag_statement(subject: str, weights: str, parents: list[tuple[str, str]], here_weights: str) -> bytes:
    s = provenance_statement(
        "finetune",
        Subject(name=f"m-{subject[:8]}", digest={"sha256": subject}, annotations={"weights_root": weights}),
        external={},
        internal={},
        dependencies=[
            model_dependency(name, f"file:///nonexistent/{digest[:8]}", digest, here_weights, "base" if i else "parent")
            for i, (name, digest) in enumerate(parents)
        ],
        started_on="2026-11-25T00:00:00Z",
        finished_on="2026-11-25T00:00:01Z",
    )
    return statement_bytes(s)


def _signed_dag(signed_chain: dict[str, Path], tmp_path: Path, levels: int, parent_name: str = "") -> Path:
    """The verified folder on top of `levels` levels of two models each, every model a trusted statement naming both
    models of the level below as parents (2**levels paths from top to bottom); the bottom two are allow-listed."""
    import hashlib

    dst = tmp_path / "top"
    shutil.copytree(signed_chain["base"], dst)
    here = hash_model(dst)
    key = load_private_key(signed_chain["root"] / "builder.key")

    def digest(level: int, i: int) -> str:
        return hashlib.sha256(f"dag-{level}-{i}".encode()).hexdigest()

    envelopes = []
    for level in range(1, levels + 1):
        below = [(parent_name or f"l{level - 1}-{i}", digest(level - 1, i)) for i in (0, 1)]
        for i in (0, 1):
            envelopes.append(sign_envelope(_dag_statement(digest(level, i), "00" * 32, below, "00" * 32), [key]))
    top = [(parent_name or f"l{levels}-{i}", digest(levels, i)) for i in (0, 1)]
    envelopes.insert(0, sign_envelope(_dag_statement(here.model_root, here.weights_root, top, "00" * 32), [key]))
    write_bundle(dst, envelopes)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nkeys:\n  - name: builder\n"
        f"    public_key: {signed_chain['root'] / 'builder.key.pub'}\ntrusted_roots:\n"
        + "".join(f"  - name: bottom-{i}\n    digest: sha256:{digest(0, i)}\n" for i in (0, 1))
    )
    return dst


def test_dag_of_trusted_statements_reports_each_model_once(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    """24 levels of shared parents (2**24 paths): the report is a DAG, each model in full once and every further
    edge a `ref` entry, so the JSON and the text tree grow with the number of statements, not of paths."""
    levels = 24
    dst = _signed_dag(signed_chain, tmp_path, levels)
    code, out, err = run_attest(["verify", dst, "--policy", tmp_path / "policy.yaml", "--json"])
    assert code == 0, (out[-2000:], err)
    doc = json.loads(out)
    assert doc["verified"] is True
    full, refs, todo = [], [], [doc["lineage"]]
    while todo:
        n = todo.pop()
        (refs if n.get("ref") else full).append(n["digest"])
        assert not (n.get("ref") and n["parents"])
        todo.extend(n["parents"])
    models = 2 * levels + 3  # top, 2 per level, 2 bottom roots
    assert len(full) == len(set(full)) == models
    assert len(refs) == 2 * (2 * levels + 1) - (models - 1)  # every edge once; those not first are refs
    assert len(out) < 2000 * models  # linear: about 1 KB per model
    code, text, err = run_attest(["verify", dst, "--policy", tmp_path / "policy.yaml"])
    assert code == 0, err
    assert len(text.splitlines()) < 3 * (2 * (2 * levels + 1) + 10)
    assert text.count("(shown above)") == len(refs)


def test_hostile_dependency_name_cannot_forge_output_lines(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    """A trusted statement may carry any dependency name: newlines and ANSI escapes in it are shown escaped, so it can
    neither print a VERIFIED line nor draw a fake tree line."""
    evil = "x\n\x1b[1;32mVERIFIED\x1b[0m\n└── l0 trusted root  verified\r"
    dst = _signed_dag(signed_chain, tmp_path, 1, parent_name=evil)
    (tmp_path / "policy.yaml").write_text(  # the bottom is no longer allow-listed: verification fails
        f"version: 1\nkeys:\n  - name: builder\n    public_key: {signed_chain['root'] / 'builder.key.pub'}\n"
    )
    code, text, err = run_attest(["verify", dst, "--policy", tmp_path / "policy.yaml"])
    assert code == 1, err
    lines = text.splitlines()
    assert lines[-1] == "NOT VERIFIED"
    assert not any(line.lstrip("│├└─ ").startswith(("VERIFIED", "l0 trusted")) for line in lines), text
    assert "\x1b" not in text and "\r" not in text
    assert "\\x1b[1;32mVERIFIED" in text  # shown, escaped


def _junk_envelope(subject: str, signatures: int, seed: int) -> str:
    """A statement about `subject` carrying `signatures` random signatures (each costs a public-key operation per
    trusted key to reject)."""
    import base64
    import random

    rng = random.Random(seed)
    payload = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "junk", "digest": {"sha256": subject}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"n": seed},
        }
    ).encode()
    sigs = [{"keyid": "", "sig": base64.b64encode(rng.randbytes(102)).decode()} for _ in range(signatures)]
    doc = {"payload": base64.b64encode(payload).decode(), "payloadType": "application/vnd.in-toto+json"}
    return json.dumps({**doc, "signatures": sigs}) + "\n"


@pytest.mark.parametrize(
    ("case", "needle"),
    [("signatures", "more than the 1024 allowed"), ("statements", "more than 16 statements about model root")],
)
def test_junk_signatures_and_statements_are_bounded(
    signed_chain: dict[str, Path], tmp_path: Path, case: str, needle: str
) -> None:
    """Junk appended to `.attest/`: more signatures in all than a lineage carries (17 statements x 64), or more
    statements about one model than re-recording makes, is refused before any signature is checked."""
    dst = _copy(signed_chain, tmp_path)
    here = hash_model(dst).model_root
    with bundle_path(dst).open("a") as fh:
        for i in range(17):
            if case == "signatures":
                fh.write(_junk_envelope(f"{i:064x}", 64, i))
            else:
                fh.write(_junk_envelope(here, 1, i))
    code, err = _cli_exit(dst, signed_chain)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "provenance.intoto.jsonl" in err and needle in err


def test_unattested_root_names_the_flag_that_trusts_it(signed_chain: dict[str, Path]) -> None:
    """Keys alone: the base is not allow-listed, so verification fails closed and the problem line gives the exact
    --trusted-root flag (and policy entry); passing that flag makes the same lineage verify."""
    pub = signed_chain["root"] / "builder.key.pub"
    code, out, _ = run_attest(["verify", signed_chain["merged"], "--key", pub])
    base_root = hash_model(signed_chain["base"]).model_root
    flag = f"--trusted-root base=sha256:{base_root}"
    assert code == 1 and "unattested_parent" in out and flag in out and "`trusted_roots:` entry" in out, out
    code, out, err = run_attest(["verify", signed_chain["merged"], "--key", pub, *flag.split(" ")])
    assert code == 0 and "VERIFIED" in out, out + err
    assert "signed by builder.key.pub" in out  # the signer is named by the public key file given, not 'builder.key'


@pytest.mark.parametrize("spec", ["base", "=sha256:" + "0" * 64, "base=sha256:abc", "base=md5:" + "0" * 64])
def test_malformed_trusted_root_is_bad_input(signed_chain: dict[str, Path], spec: str) -> None:
    code, _, err = run_attest(["verify", signed_chain["merged"], "--trusted-root", spec])
    assert code == 2 and "--trusted-root" in err, err


def test_trusted_root_from_the_command_line_equals_the_policy_entry(signed_chain: dict[str, Path]) -> None:
    base_root = hash_model(signed_chain["base"]).model_root
    trust = build_trust(
        None, (signed_chain["root"] / "builder.key.pub",), roots=(f"org/tiny=base@v1=sha256:{base_root}",)
    )
    assert trust.roots == {base_root: "org/tiny=base@v1"}  # the digest is after the last '='
    assert verify_model(signed_chain["merged"], trust).verified
