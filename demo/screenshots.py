"""Drive the demo in headless Chromium (Playwright) and save a screenshot of each tab.

    python demo/screenshots.py runs/sentiment [more folders] --out docs/images [--text REVIEW] [--batch-file LINES.txt]

Uses the system's Chromium (Debian: `apt-get install chromium`) through the Playwright Python package
(`pip install playwright`); it never downloads a browser (no `playwright install`). The browser may
talk to the demo on 127.0.0.1 only: every other request is aborted and listed. PNGs are reduced to a
256-colour palette so each stays small enough for a README.

tests/test_demo_browser.py uses `drive` below on a tiny model.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("TASKEMBED_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REVIEW = "A gripping, beautifully shot film with a superb cast; I loved every minute."
BATCH = [
    "A gripping, beautifully shot film with a superb cast.",
    "Dull, tedious and far too long.",
    "The plot is thin but the music is wonderful.",
    "Lifeless characters and a clumsy script.",
    "Charming, funny and smart.",
]


def browser_problem() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Playwright Python package is missing (pip install playwright; never `playwright install`)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get update && apt-get install -y chromium)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compress_png(path: Path, max_bytes: int = 195_000) -> None:
    """Palette PNG (256 colours): a screenshot of this UI goes from ~300 KB to well under 200 KB.

    A long page (About, with its plots) can still be larger; then fewer colours are tried, down to 64,
    and the first result under `max_bytes` is kept (else the smallest).
    """
    import io

    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    best = None
    for colors in (256, 192, 128, 96, 64):
        buf = io.BytesIO()
        rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
        if best is None or len(data) < len(best):
            best = data
        if len(data) <= max_bytes:
            break
    path.write_bytes(best)


def table_rows(page, selector: str) -> int:
    """Data rows shown by a gr.Dataframe (its visible ARIA rows less the header row)."""
    rows = page.locator(f"{selector} [role=row]").filter(visible=True).count()
    return rows - page.locator(f"{selector} thead [role=row]").filter(visible=True).count()


def drive(url: str, shots: Path | None = None, text: str = REVIEW, batch: list[str] | None = None, prefix: str = "demo-",
          width: int = 1280, height: int = 900, timeout_ms: int = 120_000) -> dict[str, Any]:
    """Type a text, predict, run a batch, find neighbours, open About; screenshot each tab into `shots`.

    Returns what the page showed: {"predicted": label heading, "confidence": text, "batch_rows": n,
    "neighbours": n, "about": text, "blocked": [outside URLs the page tried], "screenshots": [paths]}.
    """
    from playwright.sync_api import sync_playwright

    batch = batch or BATCH
    host = urllib.parse.urlsplit(url).hostname
    out: dict[str, Any] = {"blocked": [], "screenshots": []}

    def shot(page, name: str) -> None:
        if shots is None:
            return
        shots.mkdir(parents=True, exist_ok=True)
        path = shots / f"{prefix}{name}.png"
        page.wait_for_timeout(400)  # let transitions settle
        page.screenshot(path=str(path), full_page=True)
        compress_png(path)
        out["screenshots"].append(path)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)

            def only_local(route):
                if urllib.parse.urlsplit(route.request.url).hostname in (host, None, ""):
                    return route.continue_()
                out["blocked"].append(route.request.url)
                return route.abort()

            context.route("**/*", only_local)
            page = context.new_page()
            page.set_default_timeout(timeout_ms)
            page.goto(url)

            # Predict
            page.locator("#predict-text textarea").fill(text)
            page.locator("#predict-button").click()
            heading = page.locator('#predict-label [data-testid="label-output-value"]')
            heading.wait_for()
            page.locator("#predict-confidence").get_by_text("Predicted:").wait_for()
            out["predicted"] = heading.inner_text().strip()
            out["confidence"] = page.locator("#predict-confidence").inner_text().strip()
            shot(page, "predict")

            # Batch
            page.get_by_role("tab", name="Batch").click()
            page.locator("#batch-text textarea").fill("\n".join(batch))
            page.locator("#batch-button").click()
            page.locator("#batch-table").get_by_text(batch[-1], exact=True).filter(visible=True).first.wait_for()
            out["batch_rows"] = table_rows(page, "#batch-table")
            shot(page, "batch")

            # Embeddings
            page.get_by_role("tab", name="Embeddings").click()
            page.locator("#embed-text textarea").fill(text)
            page.locator("#embed-button").click()
            page.locator("#embed-note").get_by_text("Nearest of").wait_for()
            page.locator("#embed-plot img").first.wait_for()
            out["neighbours"] = table_rows(page, "#embed-tuned")
            shot(page, "embeddings")

            # About
            page.get_by_role("tab", name="About").click()
            page.locator("#about-summary").wait_for()
            out["about"] = page.locator("#about-summary").inner_text()
            shot(page, "about")
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", default="docs/images", help="folder for demo-*.png (default docs/images)")
    ap.add_argument("--text", default=REVIEW, help="the review typed into Predict and Embeddings")
    ap.add_argument("--batch-file", help="a text file whose non-empty lines go into the Batch tab (default: a few built-in lines)")
    ap.add_argument("--prefix", default="demo-")
    ap.add_argument("--neighbour-texts", type=int, default=600, help="validation texts embedded for the Embeddings tab (default 600)")
    args = ap.parse_args(argv)
    batch = None
    if args.batch_file:
        batch = [line.strip() for line in Path(args.batch_file).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not batch:
            print(f"error: {args.batch_file}: no non-empty lines", file=sys.stderr)
            return 2
    problem = browser_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import app as demo  # demo/app.py

    try:
        blocks = demo.build_app(args.models, neighbour_texts=args.neighbour_texts)
    except demo.taskembed.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _, url, _ = demo.launch(blocks, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        result = drive(url, Path(args.out), text=args.text, batch=batch, prefix=args.prefix)
    finally:
        blocks.close()
    print(f"predicted: {result['predicted']} ({result['confidence']})")
    for path in result["screenshots"]:
        print(f"{path} ({path.stat().st_size // 1000} kB)")
    if result["blocked"]:
        print("blocked requests to other hosts: " + ", ".join(sorted(set(result["blocked"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
