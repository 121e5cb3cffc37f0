"""bench/roofline.py end to end on the tiny model: the report holds every row, and the figures are consistent."""

from __future__ import annotations

import json

import pytest

from bench import roofline


def test_forward_flops_counts_linear_layers_and_attention():
    # one layer, hidden 2, intermediate 4: linear 2 * (4*2*2 + 2*2*4) = 64 FLOPs per token, attention 4 * 2 * length
    assert roofline.forward_flops(tokens=3, attention_tokens_x_len=3 * 5, hidden=2, inter=4, layers=1) == 64 * 3 + 4 * 2 * 15
    assert roofline.forward_flops(1, 1, 2, 4, layers=6) == 6 * roofline.forward_flops(1, 1, 2, 4, layers=1)
    # top layer trimmed to one row per text: keys and values for the 3 tokens (2 * 2*2*2 each), queries, output
    # projection and feed-forward for the one row (2 * (2*2*2 + 2*2*4)), one query over 3 keys (4 * 2 * 3)
    assert roofline.forward_flops(3, 15, 2, 4, layers=1, head_rows=1) == 16 * 3 + 48 + 24
    assert roofline.forward_flops(3, 15, 2, 4, layers=2, head_rows=1) == roofline.forward_flops(3, 15, 2, 4, 1) + 16 * 3 + 48 + 24


@pytest.mark.slow
def test_roofline_smoke(tiny_model_dir, tmp_path):
    assert roofline.main(["--model", str(tiny_model_dir), "--texts", "40", "--train", "64", "--repeats", "3",
                          "--out-dir", str(tmp_path), "--name", "rl"]) == 0
    data = json.loads((tmp_path / "rl.json").read_text())
    rows = {r["what"]: r for r in data["runs"]}
    assert "predict, float32" in rows and "training step (default recipe)" in rows
    for r in rows.values():
        assert r["achieved_gflops"] > 0 and r["ceiling_gflops"] > 0
        assert r["max_speedup_same_arithmetic"] == pytest.approx(1 / r["fraction_of_ceiling"])
    assert data["meta"]["test_texts"] == 40 and data["meta"]["train_examples"] == 64
    assert "| predict, float32 |" in (tmp_path / "rl.md").read_text()
