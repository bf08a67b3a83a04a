"""A pruned folder never points at code it did not copy: dangling ``auto_map`` entries are dropped."""

from __future__ import annotations

import json

from prunekit.config import DataOptions, PruneSettings
from prunekit.io.automap import drop_dangling_auto_map
from prunekit.pipeline import prune


def _with_auto_map(folder):
    """The folder names remote-code classes, as a downloaded hub folder may; one of their files is there."""
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForSequenceClassification": "modeling_evil.EvilForSequenceClassification"}
    (folder / "config.json").write_text(json.dumps(config))
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    return folder


def test_a_pruned_model_keeps_no_auto_map_to_code_it_did_not_copy(tiny_classifier, tiny_csv, tmp_path):
    out = tmp_path / "out"
    prune(str(_with_auto_map(tiny_classifier)), DataOptions(str(tiny_csv), max_train_samples=32, max_eval_samples=16),
          out, PruneSettings(sparsity=0.5, schedule="oneshot", finetune_epochs=0, latency=False))
    assert not list(out.glob("*.py"))
    for name in ("config.json", "tokenizer_config.json"):
        assert "auto_map" not in json.loads((out / name).read_text()), name


def test_only_entries_whose_code_is_in_the_folder_are_kept(tmp_path):
    (tmp_path / "modeling_x.py").write_text("")
    auto_map = {"AutoModel": "modeling_x.XModel", "AutoConfig": "configuration_x.XConfig",
                "AutoModelForCausalLM": "someone/repo--modeling_x.XForCausalLM", "AutoTokenizer": "../modeling_x.T"}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": auto_map}))
    assert sorted(drop_dangling_auto_map(tmp_path)) == ["config.json:AutoConfig", "config.json:AutoModelForCausalLM",
                                                        "config.json:AutoTokenizer"]
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {"AutoModel": "modeling_x.XModel"}
    assert drop_dangling_auto_map(tmp_path) == []
