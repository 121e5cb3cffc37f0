"""A bounded load check of the demo's predict endpoint, on this machine only.

    python demo/load_check.py MODEL [--requests 200] [--clients 20] [--time-limit 300] [--json out.json]
    python demo/load_check.py --url http://127.0.0.1:7860/ [...]      # a demo that is already running

Without --url it starts `python demo/app.py MODEL` on a free 127.0.0.1 port in a child process (so the
server does not share this process's interpreter with the clients), waits for it, and stops it at the end.
CLIENTS threads, each with its own gradio_client.Client, send REQUESTS predict calls in all (texts from
the model's validation data when it has some, else a fixed list of reviews). It stops by itself: after
REQUESTS calls, or at TIME_LIMIT seconds, whichever comes first; each call also has its own timeout.
Only loopback addresses are accepted as targets.

Reports p50/p95/max latency, throughput and the errors, as text and optionally as JSON.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXTS = [
    "A gripping, beautifully shot film with a superb cast.",
    "Dull, tedious and far too long; I nearly fell asleep.",
    "The plot is thin but the music is wonderful.",
    "Lifeless characters and a clumsy script.",
    "Charming, funny and smart from start to finish.",
    "An ambitious mess that never finds its footing.",
    "It is a small film, but an honest and moving one.",
    "Neither funny nor scary, just loud.",
]


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None, deadline: float) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"error: the demo exited with status {proc.returncode} before it was ready")
        try:
            with opener.open(url + "gradio_api/info", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"error: the demo at {url} was not ready in time")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def run(url: str, model_name: str | None, texts: list[str], requests: int, clients: int, time_limit: float,
        request_timeout: float) -> dict:
    from gradio_client import Client

    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    stop_at = time.monotonic() + time_limit
    connect_errors: list[str] = []

    def worker(i: int) -> None:
        nonlocal issued
        try:
            client = Client(url, verbose=False)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                connect_errors.append(f"{type(exc).__name__}: {exc}")
            return
        while True:
            with lock:
                if issued >= requests or time.monotonic() >= stop_at:
                    return
                n = issued
                issued += 1
            text = texts[n % len(texts)]
            started = time.perf_counter()
            try:
                job = client.submit(model_name, text, api_name="/predict")
                label = job.result(timeout=min(request_timeout, max(0.1, stop_at - time.monotonic())))[0]
                if not isinstance(label, dict) or "label" not in label:
                    raise ValueError(f"unexpected answer {label!r:.80}")
                with lock:
                    latencies.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors[type(exc).__name__ + (f": {str(exc)[:80]}" if str(exc) else "")] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, stop_at - time.monotonic()) + request_timeout + 30)
    wall = time.perf_counter() - started
    ms = [1000 * x for x in latencies]
    return {
        "url": url,
        "requests_planned": requests,
        "requests_sent": issued,
        "clients": clients,
        "ok": len(latencies),
        "errors": sum(errors.values()) + len(connect_errors),
        "error_kinds": dict(errors) | ({"client could not connect": len(connect_errors)} if connect_errors else {}),
        "wall_seconds": round(wall, 3),
        "throughput_per_second": round(len(latencies) / wall, 2) if wall > 0 else None,
        "latency_ms": {"p50": round(percentile(ms, 50), 1), "p95": round(percentile(ms, 95), 1), "max": round(max(ms), 1) if ms else None,
                       "mean": round(statistics.fmean(ms), 1) if ms else None},
        "stopped_by_time_limit": issued < requests,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Bounded load check of the demo's predict endpoint (127.0.0.1 only).")
    ap.add_argument("model", nargs="?", help="a trained model folder (starts the demo for it)")
    ap.add_argument("--url", help="a running demo on this machine instead, e.g. http://127.0.0.1:7860/")
    ap.add_argument("--model-name", help="the model picker's value (default: the folder name; with --url: the first model)")
    ap.add_argument("--requests", type=int, default=200, help="calls in all (default 200, at most 5,000)")
    ap.add_argument("--clients", type=int, default=20, help="concurrent clients (threads; default 20, at most 64)")
    ap.add_argument("--time-limit", type=float, default=300, help="stop sending after this many seconds (default 300, at most 1,800)")
    ap.add_argument("--request-timeout", type=float, default=60, help="give up on one call after this many seconds (default 60)")
    ap.add_argument("--startup-timeout", type=float, default=300, help="wait this long for the demo to come up (default 300)")
    ap.add_argument("--json", help="also write the result as JSON here")
    args = ap.parse_args(argv)
    if bool(args.model) == bool(args.url):
        ap.error("give a MODEL folder or --url of a running demo (one of them)")
    if not 1 <= args.requests <= 5000 or not 1 <= args.clients <= 64 or not 0 < args.time_limit <= 1800:
        ap.error("--requests 1..5000, --clients 1..64, --time-limit up to 1800 s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    texts = list(TEXTS)
    proc = None
    url = args.url
    model_name = args.model_name
    if url:
        url = url if url.endswith("/") else url + "/"
        if not is_loopback(url):
            ap.error(f"--url {url}: only a demo on this machine (127.0.0.1, localhost, ::1) may be load-tested")
    else:
        folder = Path(args.model)
        model_name = model_name or folder.resolve().name
        cfg_file = folder / "training_config.json"
        if cfg_file.is_file():
            sys.path.insert(0, str(HERE))
            try:
                import app as demo  # reads the validation texts the same way the demo does

                val = demo.validation_data(json.loads(cfg_file.read_text()), cap=400)
                texts = [t for t in val.texts if len(t) <= 2000] or texts
            except Exception:  # noqa: BLE001 - fall back to the fixed reviews
                pass
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        cmd = [sys.executable, str(HERE / "app.py"), str(folder), "--host", "127.0.0.1", "--port", str(port)]
        log = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True,
                                env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        t0 = time.monotonic()
        wait_ready(url, proc, time.monotonic() + args.startup_timeout)
        startup = time.monotonic() - t0
        # One warm-up call, not counted: the first request pays for lazy initialisation.
        from gradio_client import Client

        Client(url, verbose=False).predict(model_name, texts[0], api_name="/predict")
        result = run(url, model_name, texts, args.requests, args.clients, args.time_limit, args.request_timeout)
    except BaseException:
        if proc is not None:
            log.seek(0)
            tail = log.read()[-2000:]
            if tail.strip():
                print("demo log (tail):\n" + tail, file=sys.stderr)
        raise
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    result.update({"model": args.model or model_name, "startup_seconds": round(startup, 1) if proc else None,
                   "command": " ".join(["python", "demo/load_check.py", *(sys.argv[1:] if argv is None else argv)]),
                   "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"})
    lat = result["latency_ms"]
    print(f"{result['ok']}/{result['requests_sent']} ok, {result['errors']} errors, {result['clients']} clients, "
          f"{result['wall_seconds']:.1f} s, {result['throughput_per_second']} requests/s; "
          f"latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms")
    for kind, n in result["error_kinds"].items():
        print(f"  {n} x {kind}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.json}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
