"""Browser timings of the volunteer classifier (headless Chromium via Playwright, gunicorn, PostgreSQL).

Measures:
- bytes shipped: frontend/dist/classifier.js and .css, raw and gzip -9 (and what the server sent);
- cold load: from navigation start (empty cache, new session) to the first galaxy on screen, and to
  the first classification stored (answered by keyboard at once, so it is the page's own time);
- Enter → next image: from the Enter keydown that submits to the first frame after the next
  subject's image is on screen (preloaded queue, no page load), over many subjects;
- the baseline, in the same run: a warm full page reload to the first image on screen (what a
  classic one-page-per-subject site costs), so the figures read as ratios on a noisy machine.

Usage: .venv/bin/python bench/frontend_timing.py [--rounds 20] [--cold 5] [--port 8932]
It uses its own embedded servers in var/bench-frontend/ (or DATABASE_URL / REDIS_URL), builds the
demo project there, and writes bench/results/frontend_timing.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "bench")]
os.environ.setdefault("CHORUS_DATA_DIR", str(ROOT / "var" / "bench-frontend"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chorus.settings")
os.environ.setdefault("CHORUS_THROTTLE_VOLUNTEER", "100000/min")
os.environ.setdefault("CHORUS_LOG_LEVEL", "WARNING")

from http_api import start_gunicorn  # noqa: E402  (after this script's own environment defaults)
from platform_processes import stop_embedded_servers  # noqa: E402

CHROMIUM = os.environ.get("CHORUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Records, in the page, when each new subject's image is on screen (first frame after it loaded).
OBSERVER = """
window.__enter = null;
window.__shown = [];
document.addEventListener('keydown', e => { if (e.key === 'Enter') window.__enter = performance.now(); }, true);
const watch = () => {
  const root = document.getElementById('chorus-classifier');
  if (!root) return setTimeout(watch, 5);
  let last = null;
  const check = () => {
    const d = root.dataset;
    if (d.imageLoaded === 'true' && d.subjectId && d.subjectId !== last) {
      last = d.subjectId;
      const enter = window.__enter;
      requestAnimationFrame(() => window.__shown.push({id: d.subjectId, frame: performance.now(), enter}));
    }
  };
  new MutationObserver(check).observe(root, {attributes: true});
  check();
};
watch();
"""


def bundle_sizes() -> dict:
    sizes = {}
    for name in ("classifier.js", "classifier.css"):
        data = (ROOT / "frontend" / "dist" / name).read_bytes()
        sizes[name] = {"raw": len(data), "gzip": len(gzip.compress(data, 9))}
    sizes["total"] = {k: sum(v[k] for v in sizes.values()) for k in ("raw", "gzip")}
    return sizes


def prepare() -> tuple[int, str]:
    import django

    django.setup()
    from django.core.management import call_command

    from projects.services import create_demo_project

    call_command("migrate", verbosity=0)
    workflow = create_demo_project()
    return workflow.pk, workflow.project.slug




def stats(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
    }


def classify_current(page, submit: bool = True) -> None:
    """Smooth (1), Enter to the drawing task; Enter again submits (no boxes)."""
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Mark each companion")
    if submit:
        page.keyboard.press("Enter")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="subjects classified for Enter → next image")
    parser.add_argument("--cold", type=int, default=5, help="cold loads (fresh browser context each)")
    parser.add_argument("--port", type=int, default=8932)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "frontend_timing.json")
    args = parser.parse_args()

    sizes = bundle_sizes()
    workflow_id, slug = prepare()
    server = start_gunicorn(args.port, workers=2, threads=4)
    url = f"http://127.0.0.1:{args.port}/projects/{slug}/workflows/{workflow_id}/classify/"
    from playwright.sync_api import sync_playwright

    cold_first_image, cold_first_classification, enter_to_next, reload_baseline = [], [], [], []
    transferred: dict[str, int] = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for i in range(args.cold):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                context.add_init_script(f"localStorage.setItem('chorus:tutorial-seen:{workflow_id}', '1')")
                context.add_init_script(OBSERVER)
                page = context.new_page()
                if i == 0:
                    def record(response) -> None:
                        if "/static/app/" in response.url:
                            size = response.request.sizes()["responseBodySize"]
                            transferred[response.url.rsplit("/", 1)[-1]] = size

                    page.on("response", record)
                page.goto(url)
                page.wait_for_function("window.__shown.length >= 1")
                cold_first_image.append(page.evaluate("window.__shown[0].frame"))
                with page.expect_response(lambda r: r.url.endswith("/api/classifications/") and r.status == 201) as posted:
                    classify_current(page)
                posted.value.finished()
                cold_first_classification.append(page.evaluate(
                    "performance.getEntriesByType('resource').filter(e => e.name.endsWith('/api/classifications/'))[0].responseEnd"
                ))
                context.close()

            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_init_script(f"localStorage.setItem('chorus:tutorial-seen:{workflow_id}', '1')")
            context.add_init_script(OBSERVER)
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("window.__shown.length >= 1")
            page.wait_for_timeout(500)  # Let the queue's first preloads finish, as a volunteer's first look would.
            for _ in range(args.rounds):
                shown = page.evaluate("window.__shown.length")
                classify_current(page, submit=False)
                page.wait_for_timeout(300)  # A volunteer looks before submitting; preloads go on meanwhile.
                page.keyboard.press("Enter")
                page.wait_for_function(f"window.__shown.length > {shown}")
                entry = page.evaluate(f"window.__shown[{shown}]")
                enter_to_next.append(entry["frame"] - entry["enter"])
                if page.get_attribute("#chorus-classifier", "data-state") == "finished":
                    break
            for _ in range(args.cold):
                page.reload()
                page.wait_for_function("window.__shown.length >= 1")
                reload_baseline.append(page.evaluate("window.__shown[0].frame"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
        stop_embedded_servers()

    results = {
        "cold load → first image on screen": stats(cold_first_image),
        "cold load → first classification stored": stats(cold_first_classification),
        "Enter → next image on screen": stats(enter_to_next),
        "baseline: warm page reload → first image on screen": stats(reload_baseline),
    }
    base = results["baseline: warm page reload → first image on screen"]["median_ms"]
    report = {
        "machine": "shared 2-core VM; gunicorn (2 workers x 4 threads), PostgreSQL, Redis and Chromium on the same machine",
        "command": " ".join(["bench/frontend_timing.py", *sys.argv[1:]]),
        "bundle_bytes": sizes,
        "bytes_sent_by_server": transferred,
        "results": results,
        "ratio_enter_to_next_vs_reload": round(results["Enter → next image on screen"]["median_ms"] / base, 3) if base else None,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
