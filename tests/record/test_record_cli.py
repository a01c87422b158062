"""`attest keygen`, `attest record merge|finetune`, `attest countersign` on real checkpoints: a real mergekit merge of
two real fine-tunes, a chain that verifies from the child folder alone, and bad input refused with nothing written."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from attest.identity import hash_model
from attest.lineage.store import bundle_path, load_bundle
from attest.signing import load_public_key
from attest.statements import BUILD_TYPES
from tests.support.builders import copy_model, finetune
from tests.support.cli import run_attest
from tests.support.record_helpers import mergekit_linear, verify_chain


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from attest.signing import generate_key

    d = tmp_path_factory.mktemp("keys")
    generate_key(d / "builder.key", "ed25519")
    generate_key(d / "auditor.key", "ecdsa-p384")
    generate_key(d / "locked.key", "ecdsa-p256", passphrase=b"s3cret")
    return {"builder": d / "builder.key", "auditor": d / "auditor.key", "locked": d / "locked.key"}


@pytest.fixture(scope="module")
def merged(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("merge")
    return mergekit_linear([tiny_models["ft_a"], tiny_models["ft_b"]], d / "merged", [0.6, 0.4])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_keygen_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_attest(["keygen", tmp_path / "k", "--type", "ecdsa-p256"])
    assert code == 0 and "keyid" in out
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert load_public_key(tmp_path / "k.pub").key_type == "ecdsa-p256"
    code, _, err = run_attest(["keygen", tmp_path / "k"])
    assert code == 2 and err.count("\n") == 1 and "already exists" in err


def test_merge_chain_verifies_from_the_folder_alone(
    merged: tuple[Path, Path],
    tiny_models: dict[str, Path],
    keys: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out_dir, config = merged
    work = copy_model(out_dir, tmp_path / "merged")
    args = ["record", "merge", "--config", config, "--parent", tiny_models["ft_a"], "--parent", tiny_models["ft_b"]]
    code, out, err = run_attest([*args, "--output", work, "--key", keys["builder"]])
    assert code == 0, err
    assert "recorded merge" in out
    trusted = [load_public_key(str(keys["builder"]) + ".pub")]
    (merge,) = verify_chain(work, trusted)
    st = merge.statement
    assert st.predicate.buildDefinition.buildType == BUILD_TYPES["merge"]
    recipe = st.predicate.buildDefinition.externalParameters["mergekit_config"]
    assert recipe["yaml"] == config.read_text() and recipe["parsed"]["merge_method"] == "linear"
    parents = st.dependencies("parent")
    assert [p.digest for p in parents] == [{"sha256": hash_model(tiny_models[n]).model_root} for n in ("ft_a", "ft_b")]
    assert st.subject[0].annotations and st.subject[0].annotations["weights_root"] == hash_model(work).weights_root
    assert st.predicate.buildDefinition.internalParameters
    assert st.predicate.buildDefinition.internalParameters["versions"]["mergekit"] == "0.1.5"

    # a fine-tune of the merge: the attested parent is named by its attestation; its envelope travels along
    child = finetune(work, tmp_path / "child", seed=7, steps=2)
    data = tmp_path / "train.txt"
    data.write_text("1 2 3\n")
    code, _, err = run_attest(
        [
            "record",
            "finetune",
            "--parent",
            work,
            "--dataset",
            data,
            "--param",
            "lr=1e-3",
            "--param",
            "steps=2",
            "--param",
            "optim=adamw",
            "--seed",
            "7",
            "--output",
            child,
            "--key",
            keys["builder"],
        ]
    )
    assert code == 0, err
    # the chain verifies from the child folder alone, with the parent folders gone
    alone = shutil.copytree(child, tmp_path / "elsewhere" / "child")
    shutil.rmtree(work)
    chain = verify_chain(alone, trusted)
    assert [v.statement.step_kind() for v in chain] == ["finetune", "merge"]
    (base_dep,) = chain[0].statement.dependencies("base")
    assert base_dep.annotations and base_dep.annotations["statement"] == chain[1].payload_digest
    params = chain[0].statement.predicate.buildDefinition.externalParameters["hyperparameters"]
    assert params == {"lr": 1e-3, "steps": 2, "optim": "adamw"}
    assert load_bundle(alone)[0].payload_digest == chain[0].payload_digest  # the model's own statement first

    # an auditor verifies the child under a policy, then countersigns its statement; both keys now verify it
    policy = _policy(tmp_path / "audit.yaml", keys["builder"], [tiny_models["ft_a"], tiny_models["ft_b"]])
    code, out, err = run_attest(["countersign", alone, "--key", keys["auditor"], "--policy", policy])
    assert code == 0, err
    assert "verified" in out and "countersigned 1 of 1" in out
    from attest.signing import verify_envelope

    both = [*trusted, load_public_key(str(keys["auditor"]) + ".pub")]
    assert len(verify_envelope(load_bundle(alone)[0], both, threshold=2).signers) == 2
    # the same key again adds nothing, says so, and leaves the bundle byte for byte
    before = bundle_path(alone).read_bytes()
    code, out, err = run_attest(["countersign", alone, "--key", keys["auditor"], "--policy", policy])
    assert code == 0, err
    assert "already signed" in out and "nothing added" in out
    assert bundle_path(alone).read_bytes() == before


def _out(output: Path, key: Path) -> list[object]:
    return ["--output", output, "--key", key]


def _policy(path: Path, key: Path, roots: list[Path]) -> Path:
    lines = ["version: 1", "keys:", "  - name: builder", f"    public_key: {key}.pub", "trusted_roots:"]
    for r in roots:
        lines += [f"  - name: {r.name}", f"    digest: sha256:{hash_model(r).model_root}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_countersign_refuses_a_statement_nobody_verified(
    tiny_models: dict[str, Path], keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack: a statement with zero signatures (here it also hides a parent) must not become trusted by an
    auditor's countersignature; and countersign without any trust to check against is refused."""
    from attest.lineage.store import write_bundle

    child = copy_model(tiny_models["ft_a"], tmp_path / "child")
    sign = ["--key", keys["builder"]]
    assert run_attest(["record", "finetune", "--parent", tiny_models["base"], "--output", child, *sign])[0] == 0
    write_bundle(child, [e.model_copy(update={"signatures": []}) for e in load_bundle(child)])
    before = bundle_path(child).read_bytes()
    auditor_pub = Path(str(keys["auditor"]) + ".pub")
    code, out, err = run_attest(["countersign", child, "--key", keys["auditor"], "--trusted-key", auditor_pub])
    assert code == 2, out
    assert err.count("\n") == 1 and "provenance.intoto.jsonl" in err and "does not verify" in err
    assert bundle_path(child).read_bytes() == before
    code, out, err = run_attest(["countersign", child, "--key", keys["auditor"]])
    assert code == 2 and err.count("\n") == 1 and "--policy" in err
    assert bundle_path(child).read_bytes() == before
    # signed by the builder and verified under a policy trusting the builder: countersigned
    code, _, err = run_attest(["record", "finetune", "--parent", tiny_models["base"], "--output", child, *sign])
    assert code == 0, err
    policy = _policy(tmp_path / "p.yaml", keys["builder"], [tiny_models["base"]])
    code, out, err = run_attest(["countersign", child, "--key", keys["auditor"], "--policy", policy])
    assert code == 0 and "countersigned 1 of 1" in out, err


def test_unchanged_training_output_is_refused(
    tiny_models: dict[str, Path], keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = copy_model(tiny_models["base"], tmp_path / "same")
    args = ["record", "finetune", "--parent", tiny_models["base"], "--output", same, "--key", keys["builder"]]
    code, _, err = run_attest(args)
    assert code == 2 and err.count("\n") == 1 and "bit-identical" in err and "--allow-unchanged" in err
    assert not (same / ".attest").exists()
    code, _, err = run_attest([*args, "--allow-unchanged"])
    assert code == 0, err
    assert bundle_path(same).is_file()


def test_encrypted_key_with_passphrase(
    tiny_models: dict[str, Path],
    keys: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATTEST_KEY_PASSPHRASE", "s3cret")
    out = copy_model(tiny_models["ft_a"], tmp_path / "ft")
    code, _, err = run_attest(
        [
            "record",
            "distill",
            "--parent",
            tiny_models["base"],
            "--teacher",
            tiny_models["ft_b"],
            "--output",
            out,
            "--key",
            keys["locked"],
        ]
    )
    assert code == 0, err
    (env,) = load_bundle(out)
    statement = json.loads(env.payload_bytes)
    roles = [d["annotations"]["role"] for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]]
    assert roles == ["student-init", "teacher"]


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("missing key", "no such private key"),
        ("public key as key", "not a PEM private key"),
        ("wrong passphrase", "wrong passphrase"),
        ("no passphrase", "encrypted"),
        ("missing parent", "no such folder"),
        ("non-model parent", "no weights"),
        ("config not yaml", "not YAML"),
        ("config not mergekit", "not a valid mergekit config"),
        ("config wrong field type", "not a valid mergekit config"),
        ("missing output", "no such output folder"),
        ("truncated parent bundle", "truncated"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    case: str,
    expect: str,
    merged: tuple[Path, Path],
    tiny_models: dict[str, Path],
    keys: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out_dir, good_config = merged
    output = copy_model(out_dir, tmp_path / "out")
    config, key, parent = good_config, keys["builder"], tiny_models["ft_a"]
    monkeypatch.delenv("ATTEST_KEY_PASSPHRASE", raising=False)
    if case == "missing key":
        key = tmp_path / "nope.key"
    elif case == "public key as key":
        key = Path(str(keys["builder"]) + ".pub")
    elif case == "wrong passphrase":
        key = keys["locked"]
        monkeypatch.setenv("ATTEST_KEY_PASSPHRASE", "guess")
    elif case == "no passphrase":
        key = keys["locked"]
    elif case == "missing parent":
        parent = tmp_path / "gone"
    elif case == "non-model parent":
        parent = tmp_path / "notes"
        parent.mkdir()
        (parent / "README.md").write_text("not a model")
    elif case == "config not yaml":
        config = tmp_path / "bad.yml"
        config.write_text("merge_method: [linear\n  models: {")
    elif case == "config not mergekit":
        config = tmp_path / "bad.yml"
        config.write_text("- just\n- a list\n")
    elif case == "config wrong field type":
        config = tmp_path / "bad.yml"
        config.write_text("merge_method: linear\nmodels: 3\n")
    elif case == "missing output":
        output = tmp_path / "never-made"
    elif case == "truncated parent bundle":
        parent = copy_model(tiny_models["ft_a"], tmp_path / "p")
        (parent / ".attest").mkdir()
        (parent / ".attest" / "provenance.intoto.jsonl").write_text('{"payload": "eA==", "payloadT')
    before = _snapshot(output) if output.exists() else None
    code, out, err = run_attest(
        [
            "record",
            "merge",
            "--config",
            config,
            "--parent",
            parent,
            "--parent",
            tiny_models["ft_b"],
            *_out(output, key),
        ]
    )
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and expect in err and "Traceback" not in err, err
    if before is not None:
        assert _snapshot(output) == before
        assert not (output / ".attest").exists()
    else:
        assert not output.exists()


def test_sigstore_without_a_token_fails_before_hashing(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline and without an OIDC token, --sigstore is a one-line usage error and nothing is written."""
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    out = copy_model(tiny_models["ft_a"], tmp_path / "out")
    code, _, err = run_attest(
        ["record", "finetune", "--parent", tiny_models["base"], "--output", out, "--sigstore", "--staging"]
    )
    assert code == 2 and err.count("\n") == 1 and "OIDC identity token" in err
    assert not (out / ".attest").exists()


def test_hf_cache_snapshot_is_named_by_hf_uri(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from attest.record import model_uri, resolve_model

    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "0123abcd"
    copy_model(tiny_models["base"], snap)
    assert model_uri(snap) == "hf://org/tiny@0123abcd"
    ref = resolve_model(snap)
    assert ref.uri == "hf://org/tiny@0123abcd" and ref.statement is None
    assert ref.model_root == hash_model(tiny_models["base"]).model_root


def test_attested_parent_is_hashed_and_names_its_statement(
    tiny_models: dict[str, Path], keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = copy_model(tiny_models["ft_b"], tmp_path / "parent")
    sign = ["--key", keys["builder"]]
    assert run_attest(["record", "finetune", "--parent", tiny_models["base"], "--output", parent, *sign])[0] == 0
    attested_root = hash_model(parent).model_root
    child = copy_model(tiny_models["ft_a"], tmp_path / "child")
    args = ["record", "finetune", "--parent", parent, "--output", child, *sign]
    code, _, err = run_attest(args)
    assert code == 0, err
    envelopes = load_bundle(child)
    assert len(envelopes) == 2
    (dep,) = json.loads(envelopes[0].payload_bytes)["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert dep["digest"] == {"sha256": attested_root}
    assert dep["annotations"]["statement"] == envelopes[1].payload_digest

    # edited after it was attested: its bundle no longer speaks about it, and record refuses
    (parent / "NOTES.md").write_text("edited after attestation\n")
    again = copy_model(tiny_models["ft_a"], tmp_path / "again")
    code, _, err = run_attest(["record", "finetune", "--parent", parent, "--output", again, *sign])
    assert code == 2 and "changed after it was attested" in err and err.count("\n") == 1
    assert not (again / ".attest").exists()


def test_parent_claiming_another_root_in_its_unsigned_bundle_is_refused(
    tiny_models: dict[str, Path], keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack: a downloaded "base" holds another model's weights plus an unsigned `.attest/` statement claiming
    the official base root. record must hash the folder, not believe the claim (it used to record the claimed root,
    which then verified against a policy allow-listing the official base)."""
    from attest.lineage.store import write_bundle

    official = copy_model(tiny_models["base"], tmp_path / "official")
    assert (
        run_attest(
            ["record", "convert", "--parent", tiny_models["ft_a"], "--output", official, "--key", keys["auditor"]]
        )[0]
        == 0
    )
    claim = load_bundle(official)[0].model_copy(update={"signatures": []})  # its statement, no signature
    fake = copy_model(tiny_models["ft_b"], tmp_path / "base")  # another model's weights
    write_bundle(fake, [claim])
    child = copy_model(tiny_models["ft_a"], tmp_path / "child")
    before = _snapshot(child)
    code, out, err = run_attest(
        ["record", "finetune", "--parent", f"base={fake}", "--output", child, "--key", keys["builder"]]
    )
    assert code == 2, out
    assert err.count("\n") == 1 and "provenance.intoto.jsonl" in err and hash_model(fake).model_root in err
    assert hash_model(official).model_root[:16] in err  # what the bundle claimed, named
    assert _snapshot(child) == before


@pytest.mark.parametrize("case", ["swapped", "missing", "extra"])
def test_record_merge_parents_must_be_the_recipes(
    case: str,
    merged: tuple[Path, Path],
    tiny_models: dict[str, Path],
    keys: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The recipe names ft_a and ft_b: each --parent must be one of them and each of them must be given."""
    out_dir, config = merged
    output = copy_model(out_dir, tmp_path / "out")
    parents = {
        "swapped": [tiny_models["ft_b"], f"base={tiny_models['base']}"],
        "missing": [tiny_models["ft_a"]],
        "extra": [tiny_models["ft_a"], tiny_models["ft_b"], f"base={tiny_models['base']}"],
    }[case]
    args = ["record", "merge", "--config", config, "--output", output, "--key", keys["builder"]]
    for p in parents:
        args += ["--parent", p]
    before = _snapshot(output)
    code, out, err = run_attest(args)
    assert code == 2, out
    assert err.count("\n") == 1 and config.name in err and "does not match the recipe" in err, err
    assert _snapshot(output) == before


def test_keygen_json_and_passphrase_from_env_or_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from attest.signing import load_private_key
    from tests.support.json_output import parse_output

    monkeypatch.delenv("ATTEST_KEY_PASSPHRASE", raising=False)
    monkeypatch.setenv("MY_PW", "from-env")
    code, out, err = run_attest(["keygen", tmp_path / "a", "--passphrase-env", "MY_PW", "--json"])
    assert code == 0, err
    doc = parse_output(out, "keygen-output.schema.json")
    assert doc["encrypted"] and doc["public_key"] == f"{tmp_path / 'a'}.pub"
    assert doc["keyid"] == load_public_key(tmp_path / "a.pub").keyid
    assert load_private_key(tmp_path / "a", b"from-env").public.keyid == doc["keyid"]
    (tmp_path / "pw").write_text("from-file\n")
    code, out, err = run_attest(
        ["keygen", tmp_path / "b", "--type", "ecdsa-p256", "--passphrase-file", tmp_path / "pw"]
    )
    assert code == 0, err
    assert load_private_key(tmp_path / "b", b"from-file").key_type == "ecdsa-p256"  # one trailing newline dropped
    code, out, err = run_attest(["keygen", tmp_path / "c", "--json"])
    assert not parse_output(out, "keygen-output.schema.json")["encrypted"]


@pytest.mark.parametrize("case", ["no tty", "unset env", "empty file", "both"])
def test_keygen_passphrase_without_a_terminal_is_bad_input(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a pipeline (stdin not a TTY) --passphrase says how to give the passphrase instead of 'aborted'."""
    monkeypatch.delenv("ATTEST_KEY_PASSPHRASE", raising=False)
    monkeypatch.delenv("UNSET_PW", raising=False)
    (tmp_path / "empty").write_text("\n")
    args = {
        "no tty": ["--passphrase"],
        "unset env": ["--passphrase-env", "UNSET_PW"],
        "empty file": ["--passphrase-file", tmp_path / "empty"],
        "both": ["--passphrase-env", "X", "--passphrase-file", tmp_path / "empty"],
    }[case]
    code, _, err = run_attest(["keygen", tmp_path / "k", *args])
    assert code == 2 and err.count("\n") == 1 and "passphrase" in err and "aborted" not in err, err
    assert not (tmp_path / "k").exists()


def test_record_and_countersign_json(
    tiny_models: dict[str, Path], keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import hashlib

    from tests.support.json_output import parse_output

    out = copy_model(tiny_models["ft_a"], tmp_path / "ft")
    args = ["record", "finetune", "--parent", tiny_models["base"], "--output", out, "--key", keys["builder"]]
    code, stdout, err = run_attest([*args, "--json"])
    assert code == 0, err
    doc = parse_output(stdout, "record-output.schema.json")
    manifest = hash_model(out)
    (env,) = load_bundle(out)
    assert doc["model_root"] == manifest.model_root and doc["weights_root"] == manifest.weights_root
    assert doc["statement_sha256"] == hashlib.sha256(env.payload_bytes).hexdigest()
    assert doc["bundle_path"] == str(bundle_path(out)) and doc["envelopes"] == 1 and doc["kind"] == "finetune"
    assert doc["keyids"] == [load_public_key(str(keys["builder"]) + ".pub").keyid]
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nkeys:\n  - name: builder\n    public_key: {keys['builder']}.pub\n"
        f"trusted_roots:\n  - name: base\n    digest: sha256:{hash_model(tiny_models['base']).model_root}\n"
    )
    code, stdout, err = run_attest(["countersign", out, "--key", keys["auditor"], "--policy", policy, "--json"])
    assert code == 0, err
    doc = parse_output(stdout, "countersign-output.schema.json")
    auditor = load_public_key(str(keys["auditor"]) + ".pub").keyid
    assert doc == {
        "model_root": manifest.model_root,
        "statements": 1,
        "keyids": [auditor],
        "bundle_path": str(bundle_path(out)),
    }
    assert [s.keyid for s in load_bundle(out)[0].signatures][-1] == auditor
    code, stdout, err = run_attest(["countersign", out, "--key", keys["auditor"], "--policy", policy, "--json"])
    doc = parse_output(stdout, "countersign-output.schema.json")
    assert code == 0 and doc["keyids"] == [] and "bundle_path" not in doc  # already signed: nothing added


def _attest_with_cache(args: list[object], cache: Path) -> tuple[int, str, str]:
    """`attest ARGS` in a fresh process whose Hugging Face cache is `cache` (huggingface_hub reads HF_HUB_CACHE at
    import), offline."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache.parent / "hf")}
    done = subprocess.run(
        [sys.executable, "-m", "attest", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    return done.returncode, done.stdout, done.stderr


def test_hf_addresses_resolve_from_the_local_cache(
    tiny_models: dict[str, Path], keys: dict[str, Path], tmp_path: Path
) -> None:
    """verify and record take `hf://org/name[@rev]` from a real cache layout (symlinks into blobs/), offline."""
    from tests.support.builders import make_hf_cache

    cache = tmp_path / "hub"
    snapshot = make_hf_cache(tiny_models["base"], cache, "org/tiny")
    before = _snapshot(cache)
    root = hash_model(tiny_models["base"]).model_root
    trusted = f"org/tiny=sha256:{root}"
    code, out, err = _attest_with_cache(["verify", "hf://org/tiny@main", "--trusted-root", trusted], cache)
    assert code == 0 and "VERIFIED" in out, out + err
    code, out, err = _attest_with_cache(["verify", f"hf://org/tiny@{snapshot.name}", "--json"], cache)
    assert code == 1 and json.loads(out)["model_root"] == root, err  # found and hashed; nothing trusted
    ft = copy_model(tiny_models["ft_a"], tmp_path / "ft")
    args = ["record", "finetune", "--parent", "base=hf://org/tiny", "--output", ft, "--key", keys["builder"], "--json"]
    code, out, err = _attest_with_cache(args, cache)
    assert code == 0, err
    (env,) = load_bundle(ft)
    (dep,) = json.loads(env.payload_bytes)["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert dep["uri"] == f"hf://org/tiny@{snapshot.name}" and dep["digest"]["sha256"] == root
    pub = f"{keys['builder']}.pub"
    code, out, err = _attest_with_cache(["verify", ft, "--key", pub, "--trusted-root", trusted], cache)
    assert code == 0, out + err
    assert _snapshot(cache) == before  # nothing written into the cache
    code, _, err = _attest_with_cache(["verify", "hf://org/absent"], cache)
    assert code == 2 and "not in the local Hugging Face cache" in err and err.count("\n") == 1, err
    code, _, err = _attest_with_cache(["verify", "hf://not a repo"], cache)
    assert code == 2 and "hf://org/name" in err, err


def test_hf_snapshot_link_outside_its_blobs_is_still_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import os

    from attest.errors import InputError
    from tests.support.builders import make_hf_cache

    snapshot = make_hf_cache(tiny_models["base"], tmp_path / "hub", "org/tiny")
    assert hash_model(snapshot).model_root == hash_model(tiny_models["base"]).model_root
    (tmp_path / "secret.txt").write_text("not part of the repo\n")
    os.symlink(tmp_path / "secret.txt", snapshot / "extra.txt")
    with pytest.raises(InputError, match="symlink leads outside"):
        hash_model(snapshot)


def test_parent_hub_id_names_the_parent(
    tiny_models: dict[str, Path], keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--parent base=DIR@org/name`: a local parent published on the Hub is recorded as hf://org/name, and a
    dataset given as FILE@org/data as hf://datasets/org/data."""
    ft = copy_model(tiny_models["ft_a"], tmp_path / "ft")
    data = tmp_path / "train.txt"
    data.write_text("1 2 3\n")
    args = ["record", "finetune", "--parent", f"base={tiny_models['base']}@Org/Tiny-Base", "--output", ft]
    code, _, err = run_attest([*args, "--dataset", f"{data}@org/tokens", "--key", keys["builder"]])
    assert code == 0, err
    deps = json.loads(load_bundle(ft)[0].payload_bytes)["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert [(d["annotations"]["role"], d["uri"]) for d in deps] == [
        ("base", "hf://Org/Tiny-Base"),
        ("dataset", "hf://datasets/org/tokens"),
    ]
    assert deps[0]["digest"]["sha256"] == hash_model(tiny_models["base"]).model_root
