import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

import prunekit
from prunekit.errors import PrunekitError
from prunekit.io.packed import (
    dense_size_bytes,
    load_packed,
    pack_state_dict,
    packed_size_bytes,
    save_packed,
)
from prunekit.io.shapes import save_sparse


def sparse(shape, sparsity, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen)
    w[torch.rand(shape, generator=gen) < sparsity] = 0
    return w.to(dtype)


def assert_bit_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        x, y = a[k].reshape(-1), b[k].reshape(-1)
        if x.is_floating_point():
            x, y = x.view(torch.uint8), y.view(torch.uint8)
        assert torch.equal(x, y), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_round_trip_is_bit_identical(tmp_path, dtype, sparsity):
    sd = {
        "odd": sparse((37, 13), sparsity, dtype),  # 481 elements: not a multiple of 8
        "vec": sparse((5,), sparsity, dtype, seed=1),
        "scalar": torch.tensor(0.0, dtype=dtype),
        "ids": torch.arange(7),
        "signed_zero_nan": torch.tensor([-0.0, 0.0, float("nan"), 0.0, 0.0, 0.0, 0.0, 1.0] * 40, dtype=dtype),
    }
    path = tmp_path / "m.safetensors"
    save_packed(sd, path)
    assert_bit_identical(sd, load_packed(path))


def test_sparse_tensors_are_packed_dense_ones_are_not():
    sd = {"sparse": sparse((64, 64), 0.9), "dense": sparse((64, 64), 0.0), "ids": torch.zeros(100, dtype=torch.long)}
    packed = pack_state_dict(sd)
    assert set(packed) == {"sparse::values", "sparse::bitmask", "dense", "ids"}
    assert packed["sparse::values"].dtype == torch.float32
    assert packed["sparse::values"].numel() == int((sd["sparse"] != 0).sum())
    assert packed["sparse::bitmask"].dtype == torch.uint8 and packed["sparse::bitmask"].numel() == 64 * 64 // 8
    # min_sparsity keeps moderately sparse tensors dense
    assert "sparse" in pack_state_dict(sd, min_sparsity=0.95)


@pytest.mark.parametrize("sparsity, max_ratio", [(0.5, 0.56), (0.9, 0.15)])
def test_packed_file_is_smaller(sparsity, max_ratio):
    sd = {"w": sparse((256, 256), sparsity)}
    dense = dense_size_bytes(sd)
    assert dense > 256 * 256 * 4
    assert packed_size_bytes(sd) / dense <= max_ratio


def test_packed_file_never_much_bigger_when_dense():
    sd = {"w": sparse((256, 256), 0.0)}
    assert packed_size_bytes(sd) <= dense_size_bytes(sd) + 256


def test_shared_tensors_do_not_break_safetensors(tmp_path):
    emb = torch.nn.Embedding(10, 8)
    lin = torch.nn.Linear(8, 10)
    lin.weight = emb.weight
    sd = torch.nn.Sequential(emb, lin).state_dict()
    qkv = torch.randn(12, 4)
    sd.update({"q": qkv[:4], "k": qkv[4:8]})
    with pytest.raises(RuntimeError):  # the problem the module works around
        save_file(dict(sd), str(tmp_path / "plain.safetensors"))
    assert dense_size_bytes(sd) > 0 and packed_size_bytes(sd) > 0
    save_packed(sd, tmp_path / "p.safetensors")
    assert_bit_identical(sd, load_packed(tmp_path / "p.safetensors"))


def test_load_rejects_plain_safetensors(tmp_path):
    save_file({"w": torch.zeros(3)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(PrunekitError, match="prunekit-packed-1"):
        load_packed(tmp_path / "plain.safetensors")


def test_tied_weights_are_written_once_and_come_back_tied(tmp_path):
    emb = torch.nn.Embedding(64, 32)
    head = torch.nn.Linear(32, 64, bias=False)
    head.weight = emb.weight
    sd = torch.nn.Sequential(emb, head).state_dict()
    single = {"0.weight": sd["0.weight"]}
    assert dense_size_bytes(sd) < dense_size_bytes(single) + 200  # not twice
    assert packed_size_bytes(sd) < packed_size_bytes(single) + 200
    save_packed(sd, tmp_path / "p.safetensors")
    back = load_packed(tmp_path / "p.safetensors")
    assert back["1.weight"] is back["0.weight"]
    assert torch.equal(back["1.weight"], sd["1.weight"])


def test_a_packed_folder_of_a_model_built_from_its_config_reloads(tmp_path):
    """A model made with from_config has no config.architectures yet; the packed folder must still name its
    class (as save_pretrained would), or nothing can rebuild it."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    assert not model.config.architectures
    save_sparse(model, None, tmp_path / "out")
    ids = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        assert torch.equal(prunekit.load(tmp_path / "out")(input_ids=ids).logits, model(input_ids=ids).logits)
