"""`hydralib analyze` writes the asymmetry summary and figures for any PEFT LoRA adapters."""

from __future__ import annotations

import json

from hydralib.cli import EXIT_BAD_INPUT, main


def test_analyze_writes_summary_and_figures(lora_dirs, tmp_path, capsys):
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"grammar-en": {"application": "grammar", "language": "en"},
                                "grammar-de": {"application": "grammar", "language": "de"},
                                "reply-en": {"application": "reply", "language": "en"}}))
    out = tmp_path / "analysis"
    assert main(["analyze", *map(str, lora_dirs), "--out", str(out), "--metadata", str(meta)]) == 0
    printed = capsys.readouterr().out
    assert "3 adapters, 8 modules" in printed and "more similar:" in printed
    names = {p.name for p in out.iterdir()}
    assert {"summary.json", "similarity_overlap.png", "similarity_cosine.png", "spectra_by_layer.png",
            "dendrogram_a.png", "dendrogram_b.png"} <= names
    summary = json.loads((out / "summary.json").read_text())
    overall = summary["verdict"]["overlap"]["overall"]
    assert overall["more_similar"] in ("A", "B") and 0 <= overall["a"] <= 1.0 + 1e-9
    assert set(summary["measures"]["overlap"]["a"]["by_projection"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert "same_application" in json.dumps(summary["groups"])
    assert all((out / n).stat().st_size > 5000 for n in names if n.endswith(".png"))


def test_analyze_refuses_to_overwrite_and_reports_bad_metadata(lora_dirs, tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["analyze", str(lora_dirs[0]), str(lora_dirs[1]), "--out", str(out)]) == EXIT_BAD_INPUT
    assert "already exists" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{not json")
    assert main(["analyze", str(lora_dirs[0]), "--out", str(tmp_path / "x"), "--metadata", str(bad)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(bad) in err and "cannot read metadata JSON" in err and not (tmp_path / "x").exists()
