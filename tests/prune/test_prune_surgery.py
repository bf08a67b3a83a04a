"""Low-level surgery: each function shrinks one module in place and keeps what it computes for the kept part."""


import _structured_zoo as zoo  # tests/ is on pytest's pythonpath
import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.pytorch_utils import Conv1D

from prunekit.errors import PrunekitError
from prunekit.prune import keep_embedding_dims, keep_in_features, keep_norm, keep_out_features, remove_layers
from prunekit.prune.surgery import reshape_blank, tied_groups

one_thread = zoo.one_thread  # autouse fixture
KEEP = [0, 2, 3, 6]


def _linear(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "linear":
        return nn.Linear(5, 8).double()
    conv = Conv1D(8, 5)  # nf=8 outputs, nx=5 inputs, weight stored (5, 8)
    nn.init.normal_(conv.bias)
    return conv


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_keep_out_features_selects_outputs(kind):
    lin = _linear(kind)
    x = torch.randn(3, 5, dtype=lin.weight.dtype)
    want = lin(x)[:, KEEP]
    keep_out_features(lin, KEEP)
    assert torch.allclose(lin(x), want)
    assert lin.weight.dtype == want.dtype and lin.bias.shape == (4,)
    assert (lin.nf if kind == "conv1d" else lin.out_features) == 4


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_keep_in_features_equals_zeroing_the_dropped_inputs(kind):
    lin = _linear(kind)
    x = torch.randn(3, 5, dtype=lin.weight.dtype)
    keep = [1, 4]
    masked = x.clone()
    masked[:, [0, 2, 3]] = 0
    want = lin(masked)
    keep_in_features(lin, keep)
    assert torch.allclose(lin(x[:, keep]), want)
    assert (lin.nx if kind == "conv1d" else lin.in_features) == 2
    assert lin.bias.shape == (8,)


def test_surgery_keeps_dtype_device_and_requires_grad():
    lin = nn.Linear(4, 6).to(torch.bfloat16)
    lin.bias.requires_grad_(False)
    keep_out_features(lin, [1, 5])
    assert lin.weight.dtype == torch.bfloat16 and lin.weight.requires_grad and not lin.bias.requires_grad
    assert isinstance(lin.weight, nn.Parameter) and lin.weight.is_contiguous()


def test_embedding_and_norms():
    emb = nn.Embedding(10, 8)
    ids = torch.tensor([[1, 2, 9]])
    want = emb(ids)[..., KEEP]
    keep_embedding_dims(emb, KEEP)
    assert torch.equal(emb(ids), want) and emb.embedding_dim == 4

    ln = nn.LayerNorm(8)
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    keep_norm(ln, KEEP)
    x = torch.randn(2, 4)
    assert ln.normalized_shape == (4,) and ln.bias.shape == (4,)
    assert torch.allclose(ln(x), nn.functional.layer_norm(x, (4,), ln.weight, ln.bias, ln.eps))

    rms = LlamaRMSNorm(8)
    nn.init.normal_(rms.weight)
    w = rms.weight.detach().clone()
    keep_norm(rms, KEEP)
    assert torch.equal(rms.weight, w[KEEP])
    assert rms(x).shape == (2, 4)


@pytest.mark.parametrize("bad, match", [([], "nothing would be kept"), ([0, 8], r"in \[0, 8\)"),
                                        ([1, 1], "must not repeat"), ([-1], r"in \[0, 8\)")])
def test_bad_indices_error_and_leave_the_module_alone(bad, match):
    lin = _linear("linear")
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    with pytest.raises(PrunekitError, match=match):
        keep_out_features(lin, bad)
    assert all(torch.equal(before[k], v) for k, v in lin.state_dict().items()) and lin.out_features == 8


def test_unsorted_indices_are_sorted():
    lin = _linear("linear")
    want = lin.weight.detach()[[1, 6]].clone()
    keep_out_features(lin, [6, 1])
    assert torch.equal(lin.weight, want)


def test_remove_layers_renumbers_caches_and_config():
    model = zoo.build("llama")
    keep_blocks = [model.model.layers[0], model.model.layers[2]]
    remove_layers(model, [2, 0])
    assert list(model.model.layers) == keep_blocks  # original order, not the order asked
    assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1]
    assert model.config.num_hidden_layers == 2
    out = model.generate(zoo.inputs()["input_ids"][:1], max_new_tokens=3, do_sample=False)  # uses the KV cache
    assert out.shape == (1, 10)
    with pytest.raises(PrunekitError, match="nothing would be kept"):
        remove_layers(model, [])


def test_remove_layers_updates_layer_types_and_distilbert_count():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                      intermediate_size=24, use_sliding_window=True, sliding_window=4, max_window_layers=1)
    model = Qwen2ForCausalLM(cfg)
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    remove_layers(model, [0, 2])
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    model.config.validate()

    distil = zoo.build("distilbert")
    remove_layers(distil, [1])
    assert distil.distilbert.transformer.n_layers == 1 and distil.config.n_layers == 1


def test_reshape_blank_gives_the_requested_shape():
    conv = Conv1D(12, 4)
    reshape_blank(conv, n_out=6)
    assert conv.weight.shape == (4, 6) and conv.bias.shape == (6,) and conv.nf == 6
    lin = nn.Linear(4, 12, bias=False)
    reshape_blank(lin, n_in=7)
    assert lin.weight.shape == (12, 7) and lin.in_features == 7


def test_tied_groups_sees_a_tied_lm_head():
    model = zoo.build("gpt2")
    groups = tied_groups(model)
    assert any({a for _, a in g} == {"weight"} and len(g) == 2 for g in groups)
