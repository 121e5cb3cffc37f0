"""`taskembed embed` under torchrun with 2 CPU processes: one shard per process plus a manifest, merged back exactly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taskembed.embed import embed, load_vectors, read_manifest, search
from taskembed.errors import UserError
from tests.conftest import make_rows

REPO = Path(__file__).resolve().parent.parent


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "taskembed.cli", "embed", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_torchrun_writes_one_shard_per_process_and_a_manifest(tiny_model_dir, write_csv, tmp_path):
    rows = [{**r, "doc": f"d{i}"} for i, r in enumerate(make_rows(41, seed=21))]  # odd, so the shards differ in size
    data = write_csv(rows, "d.csv")
    texts = [r["text"] for r in rows]
    out = tmp_path / "out" / "v.parquet"
    proc = _torchrun(str(tiny_model_dir), str(data), "--out", str(out), "--chunk-size", "4", "--no-progress", "--keep", "doc")

    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["v.manifest.json", "v.shard-0-of-2.parquet", "v.shard-0-of-2.parquet.json",
                     "v.shard-1-of-2.parquet", "v.shard-1-of-2.parquet.json"]  # no OUT itself, nothing half-written
    assert proc.stdout.count("written as 2 shard(s)") == 1  # only rank 0 reports

    manifest = json.loads((out.parent / "v.manifest.json").read_text())
    assert manifest["count"] == 41 and manifest["sharding"]["world_size"] == 2 and manifest["file"] == "v.parquet"
    assert [(s["rank"], s["file"], s["count"]) for s in manifest["shards"]] == [
        (0, "v.shard-0-of-2.parquet", 21), (1, "v.shard-1-of-2.parquet", 20)]
    for s in manifest["shards"]:
        shard = out.parent / s["file"]
        assert s["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest() and s["bytes"] == shard.stat().st_size
        side = json.loads((out.parent / s["sidecar"]).read_text())
        assert side["shard"]["rank"] == s["rank"] and side["count"] == s["count"]
        # the shared fields are the same in every shard's sidecar and in the manifest
        assert {k: side[k] for k in ("model", "pooling", "dim", "normalize", "max_length", "columns")} == \
               {k: manifest[k] for k in ("model", "pooling", "dim", "normalize", "max_length", "columns")}
        _, cols = load_vectors(shard)
        assert all(i % 2 == s["rank"] for i in cols["id"]) and cols["id"] == sorted(cols["id"])

    matrix, cols = load_vectors(out.parent / "v.manifest.json")
    assert cols["id"] == list(range(41)) and cols["text"] == texts and cols["label"] == [r["label"] for r in rows]
    assert cols["doc"] == [r["doc"] for r in rows]  # a kept column, merged back in row order with the rest
    np.testing.assert_allclose(matrix, embed(tiny_model_dir, texts), atol=1e-5, rtol=1e-5)

    hits = search(out.parent / "v.manifest.json", texts[17], k=2)[0]  # search reads the shards, ids stay global
    assert hits[0]["id"] == 17 and hits[0]["text"] == texts[17] and hits[0]["doc"] == "d17"
    with pytest.raises(UserError, match="v.manifest.json is: it was written in shards"):
        search(out, texts[0])

    # a changed or missing shard is refused, not silently merged
    bad = shutil.copytree(out.parent, tmp_path / "bad")
    (bad / "v.shard-1-of-2.parquet").write_bytes((bad / "v.shard-0-of-2.parquet").read_bytes())
    with pytest.raises(UserError, match="changed since the manifest"):
        load_vectors(bad / "v.manifest.json")
    (bad / "v.shard-1-of-2.parquet").unlink()
    with pytest.raises(UserError, match="is missing"):
        read_manifest(bad / "v.manifest.json")


@pytest.mark.slow
def test_torchrun_npy_shards_merge_in_row_order(tiny_model_dir, tmp_path):
    texts = [r["text"] for r in make_rows(9, seed=5)]
    src = tmp_path / "t.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    _torchrun(str(tiny_model_dir), str(src), "--out", str(out), "--normalize", "--chunk-size", "2", "--no-progress")
    assert np.load(tmp_path / "v.shard-0-of-2.npy").shape == (5, 32) and np.load(tmp_path / "v.shard-1-of-2.npy").shape == (4, 32)
    matrix, cols = load_vectors(tmp_path / "v.manifest.json")
    assert cols is None and matrix.shape == (9, 32)
    np.testing.assert_allclose(matrix, embed(tiny_model_dir, texts, normalize=True), atol=1e-5, rtol=1e-5)
    assert search(tmp_path / "v.manifest.json", texts[4], k=1)[0][0]["id"] == 4
