"""Sentence embeddings: texts → one vector each (all-MiniLM-L6-v2 as it is deployed for semantic search).

There are no labels. Recovery distils the unpruned model's embeddings into the pruned one (MSE, or
1 − cosine), as sentence-transformers' model distillation does, so the teacher is always the input model.
Evaluation is fixed, whatever text the model recovers on:

- question → passage retrieval on the built-in ``squad`` asset: each question of a split against the set of
  the split's unique contexts, by cosine; Recall@1 (the primary metric) and MRR@10;
- paraphrase ROC-AUC on the built-in ``mrpc`` asset (the pair's cosine as the score; its 408 pairs
  alternate between validation and test);
- the mean cosine between each embedding and the one the split's first measurement gave (the unpruned
  model's, in a prune run).

The model is the bare transformers encoder (``AutoModel``); the pooling (and normalisation) its
sentence-transformers folder declares is kept on its config (``prunekit_pooling``) and computed here. A
plain encoder folder is mean-pooled (said in the run's notes). The saved folder is a sentence-transformers
folder again: ``SentenceTransformer(DIR)`` loads it whenever the pruned shapes fit the model's config;
uneven per-layer shapes (pruned heads) need ``prunekit.load`` and are reported so.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoModel, DataCollatorWithPadding, PreTrainedTokenizerBase

from prunekit.assets import resolve_data
from prunekit.data.options import DataOptions
from prunekit.data.text import read_texts
from prunekit.errors import PrunekitError, first_line
from prunekit.io.hf import check_task, load_config, load_tokenizer
from prunekit.io.sbert import Pooling, is_sentence_transformers_dir, read_pooling, write_sentence_transformers
from prunekit.io.shapes import MANIFEST, load
from prunekit.io.textnet import is_textnet_dir
from prunekit.report.metrics import pair_auc, pair_cosines, retrieval_metrics
from prunekit.tasks.base import EncodedSplit, Task, length_sorted_batches

#: Where the pooling rides on the model's config (saved with it, so a reloaded folder pools the same way).
POOLING_KEY = "prunekit_pooling"
#: Largest difference between a saved model's embeddings and the measured ones that still counts as the same.
RELOAD_TOLERANCE = 1e-4
#: Sentences the sentence-transformers reload check embeds with both loaders.
PROBES = ("Where is the Eiffel Tower?", "The Eiffel Tower stands in Paris, on the Champ de Mars.",
          "A sentence-transformers folder must embed as the pruned model does.")


# -- pooling --------------------------------------------------------------------------------------------


def pooling_of(model: nn.Module) -> Pooling:
    return Pooling.from_dict(getattr(model.config, POOLING_KEY, None) or {})


def pool(hidden: Tensor, mask: Tensor | None, pooling: Pooling) -> Tensor:
    """Token vectors (batch, seq, dim) → sentence vectors, padding excluded, as sentence-transformers pools."""
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling.mode == "cls":
        out = hidden[:, 0]
    elif pooling.mode == "max":
        out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    else:
        out = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return F.normalize(out, p=2, dim=-1) if pooling.normalize else out


def _drop_labels(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    kwargs.pop("labels", None)  # the loop's batches carry (dummy) labels; an encoder takes none
    return args, kwargs


def _add_embeddings(module: nn.Module, _args: tuple, kwargs: dict, output: Any) -> Any:
    output["logits"] = pool(output["last_hidden_state"], kwargs.get("attention_mask"), pooling_of(module))
    return output


def as_embedder(model: nn.Module, pooling: Pooling) -> nn.Module:
    """The encoder, whose outputs then carry the sentence embeddings as ``logits``: what recovery training
    and distillation read from any task's model. Forward hooks, so the model stays the plain transformers
    class that the architecture table, surgery and saving know (and copies keep them)."""
    setattr(model.config, POOLING_KEY, pooling.to_dict())
    if not getattr(model, "_prunekit_embedder", False):
        model.register_forward_pre_hook(_drop_labels, with_kwargs=True)
        model.register_forward_hook(_add_embeddings, with_kwargs=True)
        model._prunekit_embedder = True
    return model


# -- data -----------------------------------------------------------------------------------------------


@dataclass
class TextSplit:
    """Texts to embed (training: the texts distillation runs on; no labels)."""

    texts: list[tuple[str, ...]]
    labels: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = self.labels or [0] * len(self.texts)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int, seed: int = 0) -> TextSplit:
        if n >= len(self):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return TextSplit([self.texts[i] for i in idx])


@dataclass
class EvalSplit:
    """Questions with the index of their passage among the split's unique contexts, and sentence pairs."""

    questions: list[str]
    gold: list[int]
    passages: list[str]
    pairs: list[tuple[str, str]]
    pair_labels: list[int]

    def __len__(self) -> int:  # texts to embed: questions, passages and both sides of each pair
        return len(self.questions) + len(self.passages) + 2 * len(self.pairs)

    @property
    def texts(self) -> list[tuple[str, ...]]:
        return ([(q,) for q in self.questions] + [(p,) for p in self.passages]
                + [(a,) for a, _ in self.pairs] + [(b,) for _, b in self.pairs])

    @property
    def labels(self) -> list[tuple]:
        """Each text's role, read back by :func:`evaluate`: which query, passage or pair side it is."""
        n = len(self.pairs)
        return ([("query", g) for g in self.gold] + [("passage", i) for i in range(len(self.passages))]
                + [("pair_a", j, y) for j, y in zip(range(n), self.pair_labels, strict=True)]
                + [("pair_b", j, y) for j, y in zip(range(n), self.pair_labels, strict=True)])

    def subset(self, n: int, seed: int = 0) -> EvalSplit:
        """``n`` questions (against every passage of the split) and ``n`` pairs."""
        if n >= max(len(self.questions), len(self.pairs)):
            return self
        rng = random.Random(seed)
        q = sorted(rng.sample(range(len(self.questions)), min(n, len(self.questions))))
        p = sorted(rng.sample(range(len(self.pairs)), min(n, len(self.pairs))))
        return EvalSplit([self.questions[i] for i in q], [self.gold[i] for i in q], self.passages,
                         [self.pairs[i] for i in p], [self.pair_labels[i] for i in p])


@dataclass
class EmbeddingData:
    train: TextSplit
    validation: EvalSplit
    test: EvalSplit
    source: str
    text_columns: tuple[str, ...] = ("text",)
    label_column: str = ""
    label_names: list[str] = field(default_factory=list)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _squad_split(rows: list[dict], pairs: list[dict]) -> EvalSplit:
    contexts = list(dict.fromkeys(r["context"] for r in rows))
    where = {c: i for i, c in enumerate(contexts)}
    return EvalSplit([r["question"] for r in rows], [where[r["context"]] for r in rows], contexts,
                     [(p["text1"], p["text2"]) for p in pairs], [int(p["label"]) for p in pairs])


def load_embedding_data(data: DataOptions) -> EmbeddingData:
    """Evaluation: the ``squad`` and ``mrpc`` assets. Training text (for distillation): the squad training
    split's unique contexts and questions, plus the texts of ``data.data`` (default: the movie-review
    snippets) unless that is ``squad`` itself."""
    squad = Path(resolve_data("squad"))
    mrpc = _jsonl(Path(resolve_data("mrpc")) / "validation.jsonl")
    train_rows = _jsonl(squad / "train.jsonl")
    texts = list(dict.fromkeys([r["context"] for r in train_rows] + [r["question"] for r in train_rows]))
    source = "squad (retrieval), mrpc (pairs); training text: squad train"
    if data.data and data.data != "squad":
        column = data.text_columns[0] if data.text_columns else None
        texts += read_texts(data.data, column)
        source += f" + {data.data}"
    return EmbeddingData(TextSplit([(t,) for t in texts]), _squad_split(_jsonl(squad / "validation.jsonl"), mrpc[0::2]),
                         _squad_split(_jsonl(squad / "test.jsonl"), mrpc[1::2]), source)


# -- the task -------------------------------------------------------------------------------------------


def distill_loss(student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
    """MSE between the student's and the teacher's embeddings (sentence-transformers' MSELoss), or the mean
    1 − cosine with ``loss="cosine"``. There are no labels, so ``alpha`` has nothing to weigh."""
    s, t = student.float(), teacher.float()
    if getattr(cfg, "loss", "mse") == "cosine":
        return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
    return F.mse_loss(s, t)


def _collate(tokenizer: PreTrainedTokenizerBase):
    pad = DataCollatorWithPadding(tokenizer)

    def collate(examples: list[dict]) -> dict[str, Tensor]:
        batch = pad([{k: v for k, v in e.items() if k != "labels"} for e in examples])
        batch["labels"] = torch.zeros(len(examples))  # the loop hands labels to every loss; none are read
        return batch

    return collate


@torch.inference_mode()
def embed(model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64,
          desc: str | bool | None = None) -> np.ndarray:
    """The sentence embedding of every text, in the split's order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pooling, collate = pooling_of(model), _collate(tokenizer)
    out: np.ndarray | None = None
    for idx in tqdm(list(length_sorted_batches(data, batch_size)), desc=desc or "embed", leave=False,
                    disable=desc is False):
        batch = {k: v.to(device) for k, v in collate([data.features[i] for i in idx]).items() if k != "labels"}
        hidden = model(**batch)["last_hidden_state"]
        vecs = pool(hidden, batch.get("attention_mask"), pooling).float().cpu().numpy()
        if out is None:
            out = np.zeros((len(data), vecs.shape[-1]), dtype=np.float32)
        out[idx] = vecs
    model.train(was_training)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def embedding_metrics(emb: np.ndarray, roles: list[tuple], reference: np.ndarray | None) -> dict[str, float]:
    """Recall@1 and MRR@10 of the queries over the passages, the pairs' ROC-AUC, and the mean cosine to
    ``reference`` (the same texts' embeddings by the unpruned model; 1.0 without one)."""
    rows: dict[str, list[int]] = {"query": [], "passage": [], "pair_a": [], "pair_b": []}
    for i, role in enumerate(roles):
        rows[role[0]].append(i)
    gold = [roles[i][1] for i in rows["query"]]
    metrics = retrieval_metrics(emb[rows["query"]], emb[rows["passage"]], gold)
    if rows["pair_a"]:
        metrics["mrpc_auc"] = pair_auc(emb[rows["pair_a"]], emb[rows["pair_b"]], [roles[i][2] for i in rows["pair_a"]])
    same = reference is not None and reference.shape == emb.shape
    metrics["mean_cosine"] = float(pair_cosines(emb, reference).mean()) if same else 1.0
    return metrics


class EmbeddingTask(Task):
    """Texts → sentence embeddings; Recall@1 of question → passage retrieval (×100) is the metric."""

    name = "embedding"
    head = "embedding"
    metric = "recall_at_1"
    higher_is_better = True
    metric_scale = 100.0
    metric_unit = ""
    reload_class = AutoModel
    needs_teacher = True

    def load_data(self, data: DataOptions) -> EmbeddingData:
        return load_embedding_data(data)

    def load_model(self, spec: str, data: EmbeddingData, trust_remote_code: bool = False,
                   module: str | None = None, module_kwargs: dict[str, Any] | None = None,
                   ) -> tuple[nn.Module, PreTrainedTokenizerBase, bool]:
        """The bare encoder of a sentence-transformers folder (its pooling kept) or of a plain encoder folder
        (mean pooling); a classifier, LM, LSTM/CNN folder or a folder without its pooling module is refused."""
        if module is not None or module_kwargs is not None or is_textnet_dir(spec):
            raise PrunekitError(f"--task embedding runs on transformers encoders; {spec!r} is a prunekit "
                                "LSTM/GRU/RNN, TextCNN or custom-module folder")
        where, config = load_config(spec, trust_remote_code)
        check_task(spec, config, self.name)
        pooling = read_pooling(where) if is_sentence_transformers_dir(where) else Pooling()
        try:
            if (Path(where) / MANIFEST).is_file():  # pruned by prunekit: uneven shapes need its loader
                model = load(where, trust_remote_code)
            else:
                model = AutoModel.from_pretrained(where, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise PrunekitError(f"model {spec!r}: cannot load it as an encoder ({first_line(err)})") from err
        return as_embedder(model, pooling), load_tokenizer(where, trust_remote_code), False

    def align(self, data: EmbeddingData, model: nn.Module, spec: str) -> tuple[EmbeddingData, list[str]]:
        p = pooling_of(model)
        how = f"{p.mode} pooling" + (", normalised" if p.normalize else "")
        if is_sentence_transformers_dir(load_config(spec)[0]):
            return data, [f"embedding: {how}, as the sentence-transformers folder declares"]
        return data, [f"embedding: {spec!r} is a plain encoder folder (no modules.json): {how} assumed"]

    def summary(self, data: EmbeddingData) -> str:
        return "sentence embeddings"

    def describe(self, data: EmbeddingData) -> dict[str, dict[str, Any]]:
        return {"model": {"labels": []},
                "data": {"text_columns": list(data.text_columns), "label_column": None,
                         "retrieval": {s: {"questions": len(getattr(data, s).questions),
                                           "passages": len(getattr(data, s).passages),
                                           "pairs": len(getattr(data, s).pairs)} for s in ("validation", "test")}}}

    def collate(self, tokenizer: PreTrainedTokenizerBase):
        return _collate(tokenizer)

    def loss(self, outputs: Any, batch: dict[str, Tensor]) -> Tensor:
        raise PrunekitError("--task embedding has no labels to learn from: it recovers by distilling the unpruned "
                            "model's embeddings, and gradient criteria (taylor) have no loss to differentiate")

    def distill_loss(self, student: Tensor, teacher: Tensor, labels: Tensor, cfg: Any) -> Tensor:
        return distill_loss(student, teacher, labels, cfg)

    def predict(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                batch_size: int = 64, desc: str | bool | None = None) -> np.ndarray:
        return embed(model, data, tokenizer, batch_size, desc)

    def evaluate(self, model: nn.Module, data: EncodedSplit, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 64, desc: str | bool | None = None) -> tuple[dict[str, float], np.ndarray]:
        """The split's first measurement is kept as the reference the mean cosine compares with: in a prune
        run that is the unpruned model's (the baseline is measured first)."""
        emb = self.predict(model, data, tokenizer, batch_size, desc)
        reference = getattr(data, "reference_embeddings", None)
        if reference is None:
            data.reference_embeddings = emb
        return embedding_metrics(emb, list(data.labels), reference), emb

    def same_predictions(self, a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=0.0, atol=RELOAD_TOLERANCE))

    def save_files(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> dict[str, Any]:
        """Write the sentence-transformers files, then check that ``SentenceTransformer(folder)`` embeds as the
        pruned model does (when the folder's shapes fit the config; otherwise it needs ``prunekit.load``)."""
        pooling = pooling_of(model)
        write_sentence_transformers(folder, pooling, int(model.config.hidden_size))
        return {"sentence_transformers": sentence_transformers_check(model, tokenizer, folder)}


def sentence_transformers_check(model: nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> dict:
    """Does ``SentenceTransformer(folder)`` load and give the in-memory model's embeddings? Raises when it
    loads but embeds differently; reports ``loads: False`` when the shapes need :func:`prunekit.load`."""
    from sentence_transformers import SentenceTransformer

    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else {}
    if manifest and not manifest.get("vanilla_from_pretrained", False):
        return {"loads": False, "loader": "prunekit.load",
                "why": "uneven per-layer shapes that a transformers config cannot express"}
    st = SentenceTransformer(str(folder), device="cpu")
    got = st.encode(list(PROBES), convert_to_numpy=True)
    enc = EncodedSplit([{k: v for k, v in tokenizer(p, truncation=True, max_length=st.max_seq_length).items()
                         if k in tokenizer.model_input_names} for p in PROBES], [0] * len(PROBES))
    was = next(model.parameters()).device
    want = embed(model.to("cpu"), enc, tokenizer, desc=False)
    model.to(was)
    diff = float(np.abs(got - want).max())
    if diff > RELOAD_TOLERANCE:
        raise PrunekitError(f"SentenceTransformer({str(folder)!r}) embeds differently from the pruned model "
                            f"(max difference {diff:.2e}); nothing written")
    return {"loads": True, "loader": "sentence_transformers.SentenceTransformer", "max_abs_diff": diff}


__all__ = ["EmbeddingTask", "as_embedder", "distill_loss", "embed", "embedding_metrics", "pool"]
