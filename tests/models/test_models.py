"""The small text classifiers: HF-style outputs, padding-independent predictions, a vocabulary tokenizer."""

from __future__ import annotations

import pytest
import torch
from _textnet_zoo import RECURRENT_CASES, batch, one_thread, tiny  # noqa: F401

from prunekit.data import ClassificationData, Split
from prunekit.errors import PrunekitError
from prunekit.models import TextNetConfig, TextNetOptions, build_vocab_tokenizer, new_text_model


@pytest.mark.parametrize("kind", [("lstm", 2, True), ("gru", 1, False), ("rnn", 1, True), ("textcnn", 1, False)])
def test_predictions_do_not_depend_on_the_padding_of_the_batch(kind):
    model = tiny(*kind)
    b = batch()
    out = model(**b, labels=torch.tensor([0, 1, 2, 0, 1]))
    assert out.logits.shape == (5, 3) and out.loss.ndim == 0
    for i, n in enumerate(b["attention_mask"].sum(1).tolist()):  # each text alone, unpadded
        alone = model(input_ids=b["input_ids"][i:i + 1, :n], attention_mask=b["attention_mask"][i:i + 1, :n]).logits
        torch.testing.assert_close(alone[0], out.logits[i], atol=1e-5, rtol=0)


def test_config_round_trip_and_bad_values():
    cfg = TextNetConfig("textcnn", vocab_size=9, num_filters=[4, 3, 2], id2label={0: "neg", 1: "pos"}, num_labels=2)
    again = TextNetConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.label2id == {"neg": 0, "pos": 1}
    with pytest.raises(PrunekitError, match="unknown text model type"):
        TextNetConfig("transformer", vocab_size=9)
    with pytest.raises(PrunekitError, match="unsupported text model format"):
        TextNetConfig.from_dict({"model_type": "lstm", "vocab_size": 3})


def test_vocabulary_from_training_texts():
    tok = build_vocab_tokenizer(["Good movie!", "good plot", "bad movie"], min_freq=2)
    assert tok.convert_ids_to_tokens(tok("GOOD movie, weird")["input_ids"]) == ["good", "movie", "[UNK]", "[UNK]"]
    assert tok.pad_token_id == 0 and tok.model_input_names == ["input_ids", "attention_mask"]
    with pytest.raises(PrunekitError, match="vocabulary"):
        build_vocab_tokenizer(["a b c"], min_freq=2)


def test_new_model_for_a_dataset():
    split = Split([("good fun",), ("bad dull",), ("good",), ("bad",)], [1, 0, 1, 0])
    data = ClassificationData(split, split, split, ["neg", "pos"], ("text",), "label", "memory")
    model, tok = new_text_model(TextNetOptions("bigru", width=8, embed_dim=4, num_layers=2), data)
    assert model.rnn.bidirectional and model.rnn.num_layers == 2 and model.classifier.in_features == 16
    assert model.config.vocab_size == len(tok) == 4 and model.config.id2label == {0: "neg", 1: "pos"}
    with pytest.raises(PrunekitError, match="unknown --arch"):
        new_text_model(TextNetOptions("transformer"), data)


def test_reusing_a_models_tokenizer(tiny_encoder):
    split = Split([("good fun",), ("bad dull",)], [1, 0])
    data = ClassificationData(split, split, split, ["neg", "pos"], ("text",), "label", "memory")
    model, tok = new_text_model(TextNetOptions("textcnn", tokenizer=str(tiny_encoder), width=4), data)
    assert type(tok).__name__.startswith("Bert") and model.config.vocab_size == len(tok)
    enc = tok(["good fun"], return_tensors="pt")
    assert model(**enc).logits.shape == (1, 2)  # token_type_ids are accepted and ignored


@pytest.mark.parametrize("kind", RECURRENT_CASES)
@torch.no_grad()
def test_the_unpacked_export_path_gives_the_packed_logits(kind):
    model = tiny(*kind)
    b = batch()
    b["attention_mask"][4] = 0  # an empty text counts as one (padding) token in both
    want = model(**b).logits
    got = model.for_export()(b["input_ids"], b["attention_mask"])
    assert torch.allclose(got, want, atol=1e-5)
    cnn = tiny("textcnn")
    short = {k: v[:, :2] for k, v in b.items()}  # shorter than every kernel
    assert torch.allclose(cnn.for_export()(short["input_ids"], short["attention_mask"]), cnn(**short).logits,
                          atol=1e-6)
