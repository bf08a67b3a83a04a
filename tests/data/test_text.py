

def test_tables_without_labels_are_corpora_too(tmp_path):
    import json

    import pandas as pd
    import pytest

    from prunekit.data.text import read_texts
    from prunekit.errors import PrunekitError

    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["one doc", " ", "two"])))
    assert read_texts(str(path)) == ["one doc", "two"]
    pd.DataFrame({"body": ["a b", "c"]}).to_csv(tmp_path / "t.csv", index=False)
    assert read_texts(str(tmp_path / "t.csv"), text_column="body") == ["a b", "c"]
    with pytest.raises(PrunekitError, match="no text column"):
        read_texts(str(tmp_path / "t.csv"))
