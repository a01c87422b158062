"""attest.lineage.locator: every model reference becomes a folder here, and each folder is hashed once per run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import attest.lineage.locator as locator_mod
from attest.errors import InputError
from attest.identity import hash_model
from attest.lineage.locator import Locator, hub_dataset_id, hub_model_id, model_uri, split_hub_id, uri_path


@pytest.mark.parametrize("name", ["../../outside", "/abs/outside", "a/b/outside", "outside"])
def test_a_recorded_name_never_leads_out_of_the_parents_dirs(name: str, tmp_path: Path) -> None:
    """A trusted statement's dependency name is looked up by its last component only (verify once joined the whole
    name, so `../x` or an absolute name left --parents-dir)."""
    pdir = tmp_path / "parents"
    assert Locator([pdir]).candidates(name, None) == [pdir / "outside"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/.."])
def test_a_name_without_a_folder_name_names_no_folder(name: str, tmp_path: Path) -> None:
    assert Locator([tmp_path]).candidates(name, None) == []


def test_candidates_order_and_uri_schemes(tmp_path: Path) -> None:
    extra, pdir = tmp_path / "extra", tmp_path / "pdir"
    loc = Locator([pdir])
    assert loc.candidates("m", (tmp_path / "x y").as_uri(), [extra]) == [extra / "m", pdir / "m", tmp_path / "x y"]
    assert loc.candidates("m", "/bare/path") == [pdir / "m", Path("/bare/path")]
    assert loc.candidates("m", "hf://org/name@abc") == [pdir / "m"]  # not resolved from the cache for a re-hash
    assert uri_path("https://example.com/m") is None and uri_path(None) is None


def test_find_binds_by_digest_and_hashes_each_folder_once(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pdir = tmp_path / "pdir"
    shutil.copytree(tiny_models["ft_a"], pdir / "ft_a")
    (pdir / "empty").mkdir()
    calls: list[Path] = []
    real = locator_mod.hash_roots  # what the locator hashes a folder with (roots only)

    def counting(path, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(Path(path).resolve())
        return real(path, *a, **k)

    monkeypatch.setattr(locator_mod, "hash_roots", counting)
    loc = Locator([pdir])
    root = hash_model(tiny_models["ft_a"]).model_root
    assert loc.find(root, "ft_a", None) == pdir / "ft_a"
    assert loc.find("0" * 64, "ft_a", None) is None  # a folder of that name with another root is not it
    assert loc.find(root, "empty", None) is None  # not a model folder: no match, no error
    with pytest.raises(InputError):
        loc.roots(pdir / "empty")  # the refusal is remembered and given again
    assert loc.roots(pdir / "ft_a")[0] == root
    assert calls.count((pdir / "ft_a").resolve()) == 1 and calls.count((pdir / "empty").resolve()) == 1


def test_hub_names(tmp_path: Path) -> None:
    assert split_hub_id("some/dir@org/name") == ("some/dir", "org/name")
    assert split_hub_id("hf://org/name@rev") == ("hf://org/name@rev", None)
    (tmp_path / "a@org").mkdir()
    assert split_hub_id(str(tmp_path / "a@org")) == (str(tmp_path / "a@org"), None)  # an existing path stays one
    assert hub_model_id("hf://org/name@rev") == "org/name" and hub_model_id("file:///x") is None
    assert hub_dataset_id("hf://datasets/org/data") == "org/data" and hub_dataset_id("hf://org/name") is None
    snap = tmp_path / "models--org--tiny" / "snapshots" / "0123"
    snap.mkdir(parents=True)
    assert model_uri(snap) == "hf://org/tiny@0123" and model_uri(tmp_path) == tmp_path.resolve().as_uri()
