"""The demo in a real headless browser: Debian's Chromium driven by Playwright for Python.

Types a review, clicks Predict and reads the predicted label from the page; runs a batch, finds
neighbours and opens About, saving a screenshot of each tab into test-artifacts/. The browser may only
reach the demo on 127.0.0.1; any other request is aborted and fails the test.

Needs `pip install playwright` (the Python package only; never `playwright install`) and
`apt-get install chromium` (/usr/bin/chromium, or TASKEMBED_CHROMIUM). Without them the test is
skipped, except under CI (the CI variable set), where it fails with the same message.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
from pathlib import Path

import pytest

import taskembed
from tests.conftest import make_rows

pytest.importorskip("gradio")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


demo = _load("taskembed_demo_app", ROOT / "demo" / "app.py")
shots = _load("taskembed_demo_screenshots", ROOT / "demo" / "screenshots.py")


@pytest.fixture(scope="module")
def browser_ready():
    problem = shots.browser_problem()
    if problem:
        message = f"browser test cannot run: {problem}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_model_dir, browser_ready):
    root = tmp_path_factory.mktemp("demo-browser")
    for name, rows in (("train.csv", make_rows(160, seed=1)), ("val.csv", make_rows(40, seed=3))):
        with (root / name).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["text", "label"])
            w.writeheader()
            w.writerows(rows)
    overrides = {
        "data.source": str(root / "train.csv"), "data.validation": str(root / "val.csv"), "data.max_length": 32,
        "model.name": str(tiny_model_dir), "output.dir": str(root / "tiny-sentiment"),
        "train.epochs": 4, "train.batch_size": 16, "train.lr": 3e-3, "train.head_lr": 5e-3, "train.bf16": "off",
    }
    return taskembed.train(None, overrides, progress=False, echo=lambda _m: None).output_dir


@pytest.mark.browser
def test_predict_in_a_real_browser(model_folder):
    app = demo.build_app([model_folder])
    _, url, share_url = demo.launch(app, port=shots.free_port(), prevent_thread_lock=True, quiet=True)
    assert url.startswith("http://127.0.0.1:") and share_url is None
    review = "superb charming brilliant film with a delightful cast"
    try:
        seen = shots.drive(url, ARTIFACTS, text=review, batch=["superb charming", "dull boring", "a stale messy plot"],
                           prefix="demo-browser-", timeout_ms=60_000)
    finally:
        app.close()
    expected = taskembed.load(model_folder).predict([review])[0]
    assert seen["predicted"] == expected["label"]
    assert f"Predicted: {expected['label']}" in seen["confidence"] and f"{100 * expected['score']:.1f}%" in seen["confidence"]
    assert seen["batch_rows"] == 3
    assert seen["neighbours"] == 5
    assert "tiny-sentiment" in seen["about"]
    assert seen["blocked"] == [], f"the page tried to reach other hosts: {seen['blocked']}"
    assert [p.name for p in seen["screenshots"]] == [f"demo-browser-{t}.png" for t in ("predict", "batch", "embeddings", "about")]
    assert all(p.stat().st_size > 5_000 for p in seen["screenshots"])
