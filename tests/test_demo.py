"""The Gradio demo (demo/app.py) on a tiny trained model, driven over HTTP on 127.0.0.1.

One module fixture trains the tiny classifier; a copy of its folder with a calibration.json makes the
second model, so the app under test has a model picker and a calibrated model. The app is launched once
on a free local port and driven with gradio_client and plain HTTP requests.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import taskembed
from tests.conftest import make_rows

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parent.parent
APP_PATH = ROOT / "demo" / "app.py"


def load_demo():
    spec = importlib.util.spec_from_file_location("taskembed_demo_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


demo = load_demo()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    """GET on 127.0.0.1 only, ignoring any proxy settings; (status, body)."""
    assert urllib.parse.urlsplit(url).hostname == "127.0.0.1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A tiny classifier with a validation file (examples, neighbours) and a calibrated copy of it."""
    root = tmp_path_factory.mktemp("demo")
    for name, rows in (("train.csv", make_rows(240, seed=1)), ("val.csv", make_rows(60, seed=3)), ("test.csv", make_rows(60, seed=2))):
        with (root / name).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["text", "label"])
            w.writeheader()
            w.writerows(rows)
    overrides = {
        "data.source": str(root / "train.csv"), "data.validation": str(root / "val.csv"), "data.test": str(root / "test.csv"),
        "data.max_length": 32, "model.name": str(tiny_model_dir), "output.dir": str(root / "tiny-sentiment"),
        "train.epochs": 8, "train.batch_size": 16, "train.lr": 3e-3, "train.head_lr": 5e-3, "train.bf16": "off",
        # the first model stays uncalibrated on purpose; its copy below gets a known temperature
        "output.calibrate": False,
    }
    folder = taskembed.train(None, overrides, progress=False, echo=lambda _m: None).output_dir
    calibrated = root / "tiny-calibrated"
    shutil.copytree(folder, calibrated)
    (calibrated / "calibration.json").write_text(json.dumps({"temperature": 2.0}))
    return root, folder, calibrated


@pytest.fixture(scope="module")
def server(trained):
    _, folder, calibrated = trained
    app = demo.build_app([folder, calibrated])
    _, local_url, share_url = demo.launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield app, local_url, share_url
    finally:
        app.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server[1], verbose=False, download_files=str(server[0].taskembed_tmp))


def test_default_launch_is_local_with_no_share_link(server):
    app, local_url, share_url = server
    assert local_url.startswith("http://127.0.0.1:")
    assert share_url is None and app.share is False
    assert app.server_name == "127.0.0.1"
    assert not app.allowed_paths
    status, _ = http_get(local_url + "gradio_api/info")
    assert status == 200


def test_predictions_equal_the_library(client, trained):
    _, folder, _ = trained
    texts = ["superb charming film", "dull boring plot", "the actor", "great " * 40]
    expected = taskembed.load(folder).predict(texts)
    for text, ref in zip(texts, expected):
        label, confidence, details, _ = client.predict("tiny-sentiment", text, api_name="/predict")
        assert label["label"] == ref["label"] == details["label"]
        assert details["score"] == pytest.approx(ref["score"], abs=1e-6)
        for name, score in ref["scores"].items():
            assert details["scores"][name] == pytest.approx(score, abs=1e-6)
        assert {c["label"]: c["confidence"] for c in label["confidences"]} == pytest.approx(ref["scores"], abs=1e-6)
        assert f"Predicted: {ref['label']}" in confidence and "calibrated" not in confidence


def test_calibrated_confidence_and_model_comparison(client, trained):
    _, _, calibrated = trained
    clf = taskembed.load(calibrated)
    logits = clf.logits(["superb charming film"]).numpy()[0] / 2.0
    ref = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    _, confidence, details, compare = client.predict("tiny-calibrated", "superb charming film", api_name="/predict")
    assert details["temperature"] == 2.0
    assert [details["calibrated_scores"][x] for x in clf.labels] == pytest.approx(ref.tolist(), abs=1e-6)
    assert "calibrated confidence" in confidence
    # two models: the comparison table has one row per model, the uncalibrated one without a calibrated score
    rows = {r[0]: r for r in compare["data"]}
    assert set(rows) == {"tiny-sentiment", "tiny-calibrated"}
    assert rows["tiny-sentiment"][3] is None and rows["tiny-calibrated"][3] == pytest.approx(details["calibrated_score"], abs=1e-4)


def test_batch_returns_one_row_per_line_and_a_csv(client, trained):
    _, folder, _ = trained
    lines = ["superb charming", "", "dull boring", "   ", "the film is fresh", "stale messy lifeless"]
    table, csv_path, note = client.predict("tiny-sentiment", "\n".join(lines), None, api_name="/batch")
    texts = [x for x in lines if x.strip()]
    data = table["data"]
    assert [r[0] for r in data] == texts
    expected = taskembed.load(folder).predict(texts)
    assert [r[1] for r in data] == [p["label"] for p in expected]
    assert table["headers"] == ["text", "label", "score", "score_neg", "score_pos"]
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["text", "label", "score", "score_neg", "score_pos"] and len(rows) == len(texts) + 1
    assert f"{len(texts)} texts" in note


def test_gradio_keeps_its_copies_in_the_demos_private_folder(client):
    # Gradio copies every file it serves; in its default shared /tmp/gradio other local users could read visitors' texts
    # and predictions, and they outlived the demo. They go into the demo's own folder (0700, removed at exit) instead.
    client.predict("tiny-sentiment", "superb charming\ndull boring", None, api_name="/batch")
    # Each app built moves the cache into its own folder (several are built in this test process): the latest one's.
    cache = Path(os.environ["GRADIO_TEMP_DIR"])
    private = cache.parent
    assert private.name.startswith("taskembed-demo-") and private.stat().st_mode & 0o077 == 0
    assert list(cache.rglob("predictions-*.csv"))  # the served copy of the batch's CSV is there


def test_batch_csv_download_defuses_spreadsheet_formulas(client):
    lines = ["=HYPERLINK(\"http://x.invalid\",\"click\")", "+1+2", "@SUM(A1)", "-cmd|' /C calc'!A0", "-1", "a good film = fun"]
    table, csv_path, _ = client.predict("tiny-sentiment", "\n".join(lines), None, api_name="/batch")
    assert [r[0] for r in table["data"]] == lines  # on screen: the texts as given
    with open(csv_path, newline="", encoding="utf-8") as fh:
        cells = [r[0] for r in list(csv.reader(fh))[1:]]
    assert cells == ["'" + lines[0], "'+1+2", "'@SUM(A1)", "'" + lines[3], "-1", "a good film = fun"]


def test_spreadsheet_safe_leaves_numbers_and_plain_text_alone():
    from demo.app import spreadsheet_safe

    assert [spreadsheet_safe(x) for x in ("-0.5", "+3", "=1", "\tx", "\rx", "x=1", "", 0.25, -1.0)] == \
        ["-0.5", "+3", "'=1", "'\tx", "'\rx", "x=1", "", 0.25, -1.0]


def test_batch_csv_has_the_columns_of_predict_out(client, trained, tmp_path):
    # The calibrated copy: its predictions carry calibrated_score, and so must the download, as the CLI's file does.
    _, _, calibrated = trained
    texts = ["superb charming", "dull boring"]
    table, csv_path, _ = client.predict("tiny-calibrated", "\n".join(texts), None, api_name="/batch")
    from taskembed.cli import main as cli_main

    out = tmp_path / "cli.csv"
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert cli_main(["predict", str(calibrated), "--file", str(tmp_path / "in.txt"), "--out", str(out)]) == 0
    with open(csv_path, newline="", encoding="utf-8") as fh:
        demo_rows = list(csv.reader(fh))
    with open(out, newline="", encoding="utf-8") as fh:
        cli_rows = list(csv.reader(fh))
    assert demo_rows[0] == cli_rows[0] == table["headers"] and "calibrated_score" in cli_rows[0]
    assert [r[:2] for r in demo_rows[1:]] == [r[:2] for r in cli_rows[1:]]
    assert [float(x) for r in demo_rows[1:] for x in r[2:]] == pytest.approx([float(x) for r in cli_rows[1:] for x in r[2:]], abs=1e-6)


def test_batch_lines_end_where_the_cli_ends_them(client):
    # str.splitlines also breaks at U+2028, form feeds and NEL; `predict --file` breaks only at \n, \r\n and \r.
    text = "great film\u2028dull boring plot\nsecond\x0cline\r\nthird\x85text\rfourth"
    table, _, _ = client.predict("tiny-sentiment", text, None, api_name="/batch")
    assert [r[0] for r in table["data"]] == ["great film\u2028dull boring plot", "second\x0cline", "third\x85text", "fourth"]


def test_an_upload_reads_the_column_the_model_was_trained_on(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("id,review\n1,superb film\n\n2,dull plot\n", encoding="utf-8")
    assert demo.read_upload(str(path), demo.Limits(), "review") == ["superb film", "dull plot"]  # a blank line is no row
    with pytest.raises(gr.Error, match="no 'text' column"):
        demo.read_upload(str(path), demo.Limits())
    # A model trained on several columns joined (data.text_columns) reads them joined, as training did.
    posts = tmp_path / "posts.csv"
    posts.write_text("title,body\nGreat,superb film\n,dull plot\n", encoding="utf-8")
    assert demo.read_upload(str(posts), demo.Limits(), "text", ["title", "body"]) == ["Great superb film", "dull plot"]
    with pytest.raises(gr.Error, match="no columns title, subject \\(joined\\), nor a 'text' column"):
        demo.read_upload(str(posts), demo.Limits(), "text", ["title", "subject"])
    lone = tmp_path / "titles.csv"
    lone.write_text("title\nGreat\n", encoding="utf-8")  # one of the columns is not the model's text: refused, not read alone
    with pytest.raises(gr.Error, match="no columns title, body \\(joined\\), nor a 'text' column"):
        demo.read_upload(str(lone), demo.Limits(), "text", ["title", "body"])


def test_a_validation_file_that_is_not_a_table_is_never_read(tmp_path):
    # A model folder's training_config.json names the file; a folder not written by training could name any file
    # on this machine, whose lines would become examples every visitor is sent.
    secret = tmp_path / "secret.env"
    secret.write_text("API_KEY=hunter2-very-secret\nDB_PASSWORD=also-secret-value\n", encoding="utf-8")
    val = demo.validation_data({"data": {"source": "rotten_tomatoes", "validation": str(secret)}})
    assert not val.texts and "not a table file" in val.missing


def test_batch_accepts_a_csv_upload(client, tmp_path):
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows([[1, "superb, charming"], [2, "dull boring"], [3, "a brilliant film"]])
    table, _, _ = client.predict("tiny-sentiment", "", gradio_client.handle_file(str(path)), api_name="/batch")
    data = table["data"]
    assert [r[0] for r in data] == ["superb, charming", "dull boring", "a brilliant film"]


def test_oversized_and_empty_inputs_give_a_clear_error(client, server):
    app = server[0]
    limits = app.taskembed_limits
    with pytest.raises(gradio_client.exceptions.AppError, match=r"Input too long: 2,001 characters; the demo takes at most 2,000"):
        client.predict("tiny-sentiment", "x" * (limits.max_chars + 1), api_name="/predict")
    with pytest.raises(gradio_client.exceptions.AppError, match=r"Input too long: 1,001 lines"):
        client.predict("tiny-sentiment", "\n".join(["superb"] * (limits.max_lines + 1)), None, api_name="/batch")
    with pytest.raises(gradio_client.exceptions.AppError, match="Type a text first"):
        client.predict("tiny-sentiment", "   ", api_name="/predict")
    with pytest.raises(gradio_client.exceptions.AppError, match="no-such-model"):
        client.predict("no-such-model", "superb", api_name="/predict")


def test_neighbours_from_the_validation_texts(client, trained):
    root = trained[0]
    with (root / "val.csv").open(newline="") as fh:
        val = {r["text"]: r["label"] for r in csv.DictReader(fh)}
    tuned, base, plot, note = client.predict("tiny-sentiment", "superb charming film", 4, api_name="/neighbours")
    for table in (tuned, base):
        assert [r[0] for r in table["data"]] == [1, 2, 3, 4]
        assert all(val[r[3]] == r[2] for r in table["data"])
        cosines = [r[1] for r in table["data"]]
        assert cosines == sorted(cosines, reverse=True)
    assert plot and plot["type"] == "matplotlib"
    assert "60 validation texts" in note


def test_about_reads_the_folder(client, trained):
    _, folder, _ = trained
    metrics = json.loads((folder / "metrics.json").read_text())
    plan = json.loads((folder / "lr_plan.json").read_text())
    out = client.predict("tiny-calibrated", api_name="/about")
    summary, metrics_table, _, cm, curves, plan_table, config, embedding = out[:8]
    assert "tiny-calibrated" in summary and "temperature 2" in summary and "60 from `val.csv`" in summary
    rows = {(r[0], r[1]): r for r in metrics_table["data"]}
    assert rows[("test", "fine-tuned")][2] == f"{100 * metrics['test']['accuracy']:.2f}"
    # the tiny data is balanced, so its two classes tie for the most common one: the row says so
    assert ("test", "TF-IDF + logistic regression") in rows and ("validation", "majority class (2 tied for most common: their mean)") in rows
    assert [r[0] for r in plan_table["data"]] == [g["name"] for g in plan["groups"]]
    assert config == json.loads((folder / "training_config.json").read_text())
    assert "k-NN accuracy" in embedding
    assert cm and curves  # images, sent as copies in Gradio's cache (see the HTTP test)


def test_examples_come_from_the_validation_data(server, trained):
    root = trained[0]
    with (root / "val.csv").open(newline="") as fh:
        val = {r["text"] for r in csv.DictReader(fh)}
    model = server[0].taskembed_models[0]
    assert model.examples and set(model.examples) <= val
    # A validation slice carved out of the training file cannot be read back: no examples, a note instead.
    carved = demo.validation_data({"data": {"source": str(root / "train.csv")}})
    assert not carved.texts and "carved out of train.csv" in carved.missing
    missing = demo.validation_data({"data": {"source": str(root / "train.csv"), "validation": str(root / "gone.csv")}})
    assert not missing.texts and "not there any more" in missing.missing


def test_files_of_the_machine_and_the_model_are_not_served(server, trained):
    app, url, _ = server
    _, folder, _ = trained
    weights = (folder / "model.safetensors").resolve()
    secret_bytes = weights.read_bytes()[:64]
    cache = Path(app.GRADIO_CACHE).resolve()  # where Gradio keeps what it serves (uploads, processed outputs)
    targets = [
        "/etc/passwd",
        str(weights),
        str(folder.resolve() / "config.json"),
        str(folder.resolve() / "confusion_matrix_test.png"),
        urllib.parse.quote(str(cache) + "/../../../../etc/passwd", safe=""),
        urllib.parse.quote("../../../../../../etc/passwd", safe=""),
        urllib.parse.quote(str(cache / ".." / ".." / weights.relative_to("/")), safe=""),
        "..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "http://example.invalid/x",
        urllib.parse.quote("https://example.invalid/x", safe=""),
    ]
    for prefix in ("gradio_api/file=", "file="):
        for target in targets:
            status, body = http_get(url + prefix + target)
            assert status != 200 or (b"root:" not in body and secret_bytes not in body), (prefix, target, status)
            assert b"root:x:0:0" not in body and secret_bytes not in body
    # Images of the About tab went out as pixels copied into Gradio's cache, never as paths into the model folder.
    status, body = http_get(url + "config")
    assert status == 200
    config = body.decode()
    for p in (folder.resolve(), trained[2].resolve()):
        for name in ("model.safetensors", "confusion_matrix_test.png", "learning_curves.png", "embedding_projection.png"):
            assert str(p / name) not in config
    image_paths = [c["props"]["value"]["path"] for c in json.loads(config)["components"]
                   if c.get("type") == "image" and (c.get("props") or {}).get("value")]
    assert image_paths and all(Path(x).resolve().is_relative_to(cache) for x in image_paths)
    status, body = http_get(url + "gradio_api/file=" + image_paths[0])
    assert status == 200 and body[:4] in (b"\x89PNG", b"RIFF")


def test_basic_auth_is_required_when_set(server):
    app = demo.build_app(models=server[0].taskembed_models)
    _, url, _ = demo.launch(app, port=free_port(), auth=("reviewer", "s3cret"), prevent_thread_lock=True, quiet=True)
    try:
        status, _ = http_get(url + "config")
        assert status in (401, 403)
        authed = gradio_client.Client(url, auth=("reviewer", "s3cret"), verbose=False)
        label, _, _, _ = authed.predict("tiny-sentiment", "superb charming film", api_name="/predict")
        assert label["label"] in ("neg", "pos")
    finally:
        app.close()


class _StubApp:
    blocked = False

    def launch(self, **kwargs):
        self.kwargs = kwargs
        return None, "http://127.0.0.1:0/", None

    def block_thread(self):
        self.blocked = True


def test_launch_defaults_and_warnings(capsys):
    warnings: list[str] = []
    stub = _StubApp()
    demo.launch(stub, warn=warnings.append)
    assert stub.blocked and "taskembed demo on http://127.0.0.1:0/ (this machine only" in capsys.readouterr().out
    kw = stub.kwargs
    assert kw["server_name"] == "127.0.0.1" and kw["share"] is False and kw["auth"] is None
    assert "allowed_paths" not in kw and kw["ssr_mode"] is False and kw["mcp_server"] is False
    assert warnings == []
    demo.launch(stub, host="0.0.0.0", share=True, warn=warnings.append)
    assert "this machine only" not in capsys.readouterr().out  # never beside the warning that it is not
    assert stub.kwargs["server_name"] == "0.0.0.0" and stub.kwargs["share"] is True
    assert len(warnings) == 2 and "reachable from other machines" in warnings[0] and "public" in warnings[1]
    assert demo.parse_auth("a:b:c") == ("a", "b:c")
    with pytest.raises(taskembed.UserError, match="^--auth must be USER:PASSWORD"):
        demo.parse_auth("nopassword")


def test_a_bad_auth_in_the_environment_is_named_as_such(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TASKEMBED_DEMO_AUTH", "nopassword")
    assert demo.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == "error: TASKEMBED_DEMO_AUTH must be USER:PASSWORD (both non-empty)"


def test_switching_models_refreshes_or_clears_every_result(server):
    """Results of one model must not stay on screen under another's name: every output of Predict, Batch and
    Embeddings is also an output of the model picker's change event."""
    app = server[0]
    fns = list(app.fns.values())
    picker = next(f for f in fns if f.api_name == "batch").inputs[0]
    on_change = {o._id for f in fns if (picker._id, "change") in [(t[0], t[1]) for t in f.targets] for o in f.outputs}
    for name in ("batch", "neighbours", "predict"):
        fn = next(f for f in fns if f.api_name == name)
        assert {o._id for o in fn.outputs} <= on_change, name


def test_a_too_long_batch_line_is_named_by_its_line_in_the_input():
    with pytest.raises(gr.Error, match="line 4 has 30 characters; the demo takes at most 20"):
        demo.check_batch(["short", "", "  ", "x" * 30], demo.Limits(max_chars=20))
    # Scored as typed, as `taskembed predict` reads a .txt's lines: a tokenizer that makes tokens of spaces (RoBERTa's)
    # gave the demo other scores than predict and pipeline for a stripped text.
    assert demo.check_batch([" a ", "", "b"], demo.Limits()) == [" a ", "b"]
    assert demo.check_text("  great film ", demo.Limits()) == "  great film "
    with pytest.raises(gr.Error, match="Type a text first"):
        demo.check_text(" \n ", demo.Limits())


def test_the_shared_base_encoder_keeps_each_models_max_length(tiny_model_dir):
    import torch

    cpu = torch.device("cpu")
    short, long = demo._base_embedder(str(tiny_model_dir), 16, cpu), demo._base_embedder(str(tiny_model_dir), 24, cpu)
    assert short[0].max_length == 16 and long[0].max_length == 24 and short[0].device == cpu
    assert demo._base_embedder(str(tiny_model_dir), 16, cpu) is short  # loaded once per setting


def test_a_taken_port_or_a_host_it_cannot_listen_on_exits_2_with_one_line(tmp_path, capsys):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cases = [(["--port", str(port)], f"--port {port} is in use by another program"),
                 (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: not a name or address"),
                 (["--host", "192.0.2.1"], "--host 192.0.2.1: cannot listen there")]  # TEST-NET-1: no machine's own
        for options, message in cases:
            assert demo.main([str(tmp_path / "missing"), *options]) == 2  # refused before the models load
            err = capsys.readouterr().err.strip()
            assert err.startswith("error: ") and "\n" not in err and message in err, err
    # `taskembed demo --port 0` was read as no port and served on 7860; it is refused as the script refuses it.
    from taskembed.cli import main as cli

    assert cli(["demo", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --port 0: use 1 to 65535"


def test_bad_model_folder_exits_2_with_one_line(trained, tiny_model_dir, tmp_path, capsys):
    _, folder, _ = trained
    incomplete = tmp_path / "incomplete"
    shutil.copytree(folder, incomplete)
    (incomplete / "model.safetensors").unlink()
    bad_calibration = tmp_path / "bad-calibration"
    shutil.copytree(folder, bad_calibration)
    (bad_calibration / "calibration.json").write_text('{"temperature": -1}')
    cases = [(tmp_path / "missing", "model folder not found"), (tiny_model_dir, "not a classifier"), (incomplete, "the folder is incomplete"),
             (bad_calibration, "'temperature' must be a positive number")]
    for bad, message in cases:
        assert demo.main([str(folder), str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, err
    for device in ("tpu", "cuda:99"):  # a name torch does not know, a GPU this machine does not have
        assert demo.main([str(folder), "--device", device]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: device '{device}'") and "\n" not in err, err
    from taskembed.cli import main as cli_main

    assert cli_main(["demo", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "model folder not found" in err and "\n" not in err
    # As a script: the same one line and exit status 2, before any server starts.
    proc = subprocess.run([sys.executable, str(APP_PATH), str(tmp_path / "missing")], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "\n" not in proc.stderr.strip() and "Running on" not in proc.stdout


def test_a_demo_stopped_by_sigterm_removes_its_folder_of_downloads(trained, tmp_path):
    """kill, timeout and docker stop send SIGTERM; the folder holds users' texts and predictions, so it must not stay behind."""
    import os
    import signal

    _, folder, _ = trained
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp_path)}  # tempfile's folder for the demo's
    proc = subprocess.Popen([sys.executable, str(APP_PATH), str(folder), "--port", str(free_port())], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # printed once the server listens, after the folder is made
        assert line.startswith("taskembed demo on http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        assert len(list(tmp_path.glob("taskembed-demo-*"))) == 1
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # a second one (an impatient user, a supervisor) must not break the clean-up
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert not list(tmp_path.glob("taskembed-demo-*")), err
    assert "Traceback" not in err and "Exception ignored" not in err and "Keyboard interruption" not in proc.stdout.read()


def test_demo_imports_only_the_public_api():
    tree = ast.parse(APP_PATH.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names if a.name.startswith("taskembed")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("taskembed"):
            modules.add(node.module)
            assert not any(a.name.startswith("_") for a in node.names)
        elif isinstance(node, ast.Attribute):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "taskembed":
                assert not any(part.startswith("_") for part in chain), chain
    assert modules <= {"taskembed", "taskembed.embed", "taskembed.builtin"}, modules


def test_the_demo_knows_the_source_recorded_for_data_given_in_python():
    from taskembed.data import IN_MEMORY

    assert demo.IN_MEMORY == IN_MEMORY


def test_notes_say_why_something_is_missing():
    # Training skips these reports for multi-label models on purpose: advice to switch them on would be wrong.
    assert demo.embedding_markdown(None, multi_label=True).startswith("Multi-label models have no embedding report")
    assert demo.error_values({}, multi_label=True)[0].startswith("Multi-label models have no error analysis")
    assert "output.embedding_report: true" in demo.embedding_markdown(None)
    with pytest.raises(gr.Error, match="row 2 has 30 characters"):  # a CSV's data rows, as the command line counts them
        demo.check_batch(["short", "x" * 30], demo.Limits(max_chars=20), "row")
    assert "no training_config.json" in demo.validation_data({}).missing
