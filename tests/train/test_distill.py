"""Distillation: logit loss, hidden-state and attention losses with a layer map and projections, students."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from prunekit.errors import PrunekitError
from prunekit.train.distill import (
    DistillConfig,
    Distiller,
    check_teacher,
    distill_loss,
    eager_attention,
    make_student,
    uniform_layer_map,
)


def _batch(vocab: int = 40) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (4, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_logit_loss_ends():
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 1, 0])
    assert torch.allclose(distill_loss(s, t, y, DistillConfig(alpha=1.0)), F.cross_entropy(s, y))
    assert distill_loss(t, t, y, DistillConfig(alpha=0.0)).abs() < 1e-6  # KL of a distribution with itself


def test_uniform_layer_map():
    assert uniform_layer_map(3, 6) == [1, 3, 5]
    assert uniform_layer_map(2, 2) == [0, 1]
    assert uniform_layer_map(1, 2) == [1]


def test_make_student_copies_teacher_layers(tiny_model):
    student, layer_map = make_student(tiny_model, layers=1, ffn=0.5)
    assert layer_map == [1] and student.config.num_hidden_layers == 1
    assert student.bert.encoder.layer[0].intermediate.dense.out_features == 32
    kept = student.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(kept, tiny_model.bert.encoder.layer[1].attention.self.query.weight)
    assert tiny_model.config.num_hidden_layers == 2  # the teacher is untouched
    with pytest.raises(PrunekitError, match="between 1 and 2"):
        make_student(tiny_model, layers=3)


def test_hidden_and_attention_losses_train_the_projection(tiny_model):
    teacher = tiny_model
    student, layer_map = make_student(teacher, layers=1, hidden=0.5)
    cfg = DistillConfig(hidden_weight=1.0, attention_weight=1.0, layer_map=tuple(layer_map))
    distiller = Distiller(cfg, student, teacher)
    assert distiller.proj is not None and distiller.proj[0].in_features == 16
    batch, labels = _batch(), torch.tensor([0, 1, 0, 1])
    with eager_attention(student, teacher):
        kw = distiller.model_kwargs()
        s_out = student(**batch, **kw)
        with torch.no_grad():
            t_out = teacher(**batch, **kw)
        loss = distiller(s_out, t_out, labels, batch["attention_mask"])
        plain = distill_loss(s_out.logits, t_out.logits, labels, cfg)
    assert torch.isfinite(loss) and loss > plain
    loss.backward()
    assert distiller.proj[0].weight.grad is not None and distiller.proj[0].weight.grad.abs().sum() > 0


def test_same_model_has_zero_intermediate_loss(tiny_model):
    teacher = copy.deepcopy(tiny_model)
    d = Distiller(DistillConfig(alpha=0.0, hidden_weight=1.0, attention_weight=1.0), tiny_model, teacher)
    assert d.proj is None
    with eager_attention(tiny_model, teacher), torch.no_grad():
        kw = d.model_kwargs()
        loss = d(tiny_model(**_batch(), **kw), teacher(**_batch(), **kw), torch.zeros(4, dtype=torch.long))
    assert loss.abs() < 1e-5


def test_teacher_with_other_labels_is_refused(tiny_model):
    teacher = copy.deepcopy(tiny_model)
    teacher.config.id2label = {0: "negative", 1: "positive"}
    tiny_model.config.id2label = {0: "positive", 1: "negative"}
    with pytest.raises(PrunekitError, match="labels"):
        check_teacher(tiny_model, teacher)


def test_train_with_intermediate_distillation(trained_tiny):
    from prunekit.config import DataOptions
    from prunekit.pipeline import open_workbench
    from prunekit.train import TrainConfig, train

    folder, csv = trained_tiny
    wb = open_workbench(str(folder), DataOptions(str(csv), max_train_samples=64))
    teacher = copy.deepcopy(wb.model).eval()
    student, layer_map = make_student(wb.model, layers=1, hidden=0.25)
    impl = student.config._attn_implementation
    result = train(student, wb.train, wb.tokenizer, TrainConfig(epochs=1, lr=1e-3, batch_size=16), teacher=teacher,
                   distill=DistillConfig(hidden_weight=0.5, attention_weight=0.5, layer_map=tuple(layer_map)))
    assert result.steps == 4 and result.loss == result.loss  # finite
    assert student.config._attn_implementation == impl  # eager attention was only for training
