import json

from rich.console import Console

from prunekit.report.render import (
    package_versions,
    print_stage_table,
    shorten_module_name,
    stage_table,
    write_report,
)


def stage(name, acc, nonzero, packed, b1, b32):
    return {
        "name": name,
        "metrics": {"accuracy": acc, "f1_macro": acc - 0.01, "precision": acc, "recall": acc, "loss": 0.3456},
        "params_total": 4_385_920,
        "params_nonzero": nonzero,
        "sparsity": 1 - nonzero / 4_385_920,
        "size_bytes": 17_600_000,
        "size_compressed_bytes": packed,
        "latency_ms": {"batch_1": b1, "batch_32": b32},
        "seconds": 12.34,
    }


def make_report():
    return {
        "command": "prune",
        "settings": {"model": "tiny-bert", "target_sparsity": 0.5, "method": "magnitude", "data": {"max_length": 64}},
        "seed": 42,
        "versions": package_versions(),
        "stages": [
            stage("baseline", 0.912, 4_385_920, 17_610_000, 4.0, 80.0),
            stage("prune", 0.85, 2_192_960, 9_000_000, 3.9, 78.0),
            stage("final", 0.90, 2_192_960, 8_800_000, 3.2, 64.0),
        ],
        "stopped": {"step": 120, "reason": "accuracy dropped more than 2 points"},
        "layer_sparsity": {
            f"bert.encoder.layer.{i}.{m}": 0.4 + 0.05 * i
            for i in range(3)
            for m in ("attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense")
        },
    }


def test_write_report_files_and_content(tmp_path):
    report = make_report()
    write_report(tmp_path, report)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "layer_sparsity.png",
        "report.json",
        "report.md",
        "stages.png",
    ]
    assert json.loads((tmp_path / "report.json").read_text()) == report
    for png in ("layer_sparsity.png", "stages.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    for text in ("baseline", "prune", "final", "91.20", "90.00", "0.3456", "17.60", "8.80", "4.39M / 4.39M"):
        assert text in md, text
    assert "2.19M / 4.39M" in md and "| 50.0 |" in md
    assert "accuracy −1.20 points" in md
    assert "2.00× smaller" in md and "1.25× (b1), 1.25× (b32)" in md
    assert "step 120: accuracy dropped more than 2 points" in md
    assert "`target_sparsity=0.5`" in md and "`seed=42`" in md and "`data.max_length=64`" in md
    assert "![" in md and "(layer_sparsity.png)" in md and "(stages.png)" in md


def test_minimal_report_without_optional_parts(tmp_path):
    report = {
        "command": "evaluate",
        "settings": {},
        "seed": 0,
        "versions": {},
        "stages": [stage("baseline", 0.5, 1, 2, 1.0, 2.0)],
    }
    write_report(tmp_path, report)
    md = (tmp_path / "report.md").read_text()
    assert "Δ vs baseline" not in md and "Stopped" not in md
    assert not (tmp_path / "layer_sparsity.png").exists()


def test_missing_numbers_show_a_dash():
    s = stage("final", 0.5, 1, 2, 1.0, 2.0)
    s["metrics"] = {}
    s["latency_ms"] = None
    headers, rows = stage_table([s])
    assert rows[0][1] == "—" and len(rows[0]) == len(headers)


def test_shorten_module_names():
    assert shorten_module_name("bert.encoder.layer.3.attention.self.query") == "L3.attn.query"
    assert shorten_module_name("bert.encoder.layer.11.attention.output.dense") == "L11.attn.out"
    assert shorten_module_name("bert.encoder.layer.0.intermediate.dense") == "L0.ffn.in"
    assert shorten_module_name("bert.encoder.layer.0.output.dense") == "L0.ffn.out"
    assert shorten_module_name("bert.pooler.dense") == "pooler"
    assert shorten_module_name("transformer.h.2.mlp.c_fc") == "L2.mlp.c_fc"
    assert shorten_module_name("model.layers.5.self_attn.q_proj") == "L5.attn.q_proj"
    assert shorten_module_name("classifier") == "classifier"


def test_print_stage_table_wide_and_narrow():
    stages = make_report()["stages"]
    wide = Console(record=True, width=250)
    print_stage_table(stages, console=wide)
    text = wide.export_text()
    assert "baseline" in text and "final" in text and "91.20" in text and "4.39M / 4.39M" in text
    assert "accuracy −1.20 points" in text
    narrow = Console(record=True, width=80)
    print_stage_table(stages, console=narrow)
    lines = narrow.export_text().splitlines()
    assert max(map(len, lines)) <= 80
    row = next(line for line in lines if "Latency b32 ms" in line)  # transposed: one row per quantity
    assert row.split()[-3:] == ["80.0", "78.0", "64.0"]


def test_package_versions_keys():
    versions = package_versions()
    assert set(versions) == {"python", "torch", "transformers", "accelerate", "prunekit", "numpy", "scikit-learn"}
    assert versions["torch"]
