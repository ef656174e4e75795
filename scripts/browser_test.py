#!/usr/bin/env python3
"""Drives the page (scripts/build-web.sh's output) in headless Chromium through playwright.

    browser_test.py run --site DIST --out OUTDIR [--prompt P] [--seed N]
        serves DIST on 127.0.0.1 (a free port, for this process only), opens the page with
        WebGPU on, generates with the page's defaults (the CLI's) and the given prompt/seed,
        saves the downloaded PNG to OUTDIR/browser.png, a screenshot to OUTDIR/page.png and the
        timings to OUTDIR/browser.json.
    browser_test.py compare A.png B.png [--max-diff 2]
        prints the largest per-channel difference (0–255) and whether the PNGs' `parameters`
        texts agree; exits 1 when the difference exceeds --max-diff or the texts differ.

Every wait is bounded (--load-timeout, --generate-timeout). Chromium is Debian's
/usr/bin/chromium (no browser download); flags from $STIPPLE_CHROMIUM_FLAGS, default
"--enable-unsafe-webgpu --use-webgpu-adapter=swiftshader".
"""
import argparse
import functools
import http.server
import json
import os
import sys
import threading
import time


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript"}

    def log_message(self, *args):
        pass


def run(args):
    from playwright.sync_api import sync_playwright

    os.makedirs(args.out, exist_ok=True)
    handler = functools.partial(QuietHandler, directory=args.site)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/index.html"
    flags = os.environ.get("STIPPLE_CHROMIUM_FLAGS",
                           "--enable-unsafe-webgpu --use-webgpu-adapter=swiftshader").split()
    state = "#status"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=flags, timeout=120_000)
            page = browser.new_page(viewport={"width": 900, "height": 900}, accept_downloads=True)
            page.on("console", lambda m: print(f"[page {m.type}] {m.text}", flush=True))
            page.on("pageerror", lambda e: print(f"[page error] {e}", flush=True))
            print(f"browser-test: opening {url} in {browser.version}, flags {' '.join(flags)}", flush=True)
            page.goto(url, timeout=60_000)

            def wait_state(states, timeout_s):
                js = f"document.querySelector('{state}') && {json.dumps(states)}.includes(document.querySelector('{state}').dataset.state)"
                page.wait_for_function(js, timeout=timeout_s * 1000, polling=500)
                return page.get_attribute(state, "data-state")

            def fail(what):
                print(f"browser-test: {what}: {page.inner_text(state)}", file=sys.stderr)
                page.screenshot(path=os.path.join(args.out, "page.png"), full_page=True)
                sys.exit(1)

            if wait_state(["ready", "error"], args.load_timeout) == "error":
                fail("the page did not load the model")
            print(f"browser-test: {page.inner_text(state)}", flush=True)
            page.fill("#prompt", args.prompt)
            page.fill("#seed", str(args.seed))
            t0 = time.monotonic()
            page.click("#generate")
            if wait_state(["done", "error"], args.generate_timeout) == "error":
                fail("generation failed")
            wall = time.monotonic() - t0
            with page.expect_download(timeout=30_000) as download:
                page.click("#download")
            download.value.save_as(os.path.join(args.out, "browser.png"))
            page.screenshot(path=os.path.join(args.out, "page.png"), full_page=True)
            timings = {
                "adapter_status": page.inner_text(state),
                "load_s": float(page.get_attribute(state, "data-load-seconds")),
                "generate_s": float(page.get_attribute(state, "data-seconds")),
                "previews": int(page.get_attribute(state, "data-previews") or 0),
                "generate_wall_s": round(wall, 2),
                "browser": browser.version,
                "flags": flags,
            }
            if timings["previews"] == 0:
                fail("the page showed no live preview")
            with open(os.path.join(args.out, "browser.json"), "w") as f:
                json.dump(timings, f, indent=1)
            print(f"browser-test: browser image in {timings['generate_s']:.1f} s "
                  f"(model load {timings['load_s']:.1f} s, {timings['previews']} live previews); "
                  "saved browser.png, page.png", flush=True)
            browser.close()
    finally:
        server.shutdown()


def compare(args):
    import numpy as np
    from PIL import Image

    a, b = Image.open(args.a), Image.open(args.b)
    if a.size != b.size:
        print(f"browser-test: sizes differ: {args.a} {a.size}, {args.b} {b.size}")
        sys.exit(1)
    diff = np.abs(np.asarray(a.convert("RGB"), dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16))
    worst = int(diff.max())
    texts = (a.info.get("parameters"), b.info.get("parameters"))
    print(f"browser-test: max per-channel difference {worst}/255 (limit {args.max_diff}/255), "
          f"mean {diff.mean():.4f}; parameters {'identical' if texts[0] == texts[1] else 'DIFFER'}")
    if texts[0] != texts[1]:
        print(f"  {args.a}: {texts[0]!r}\n  {args.b}: {texts[1]!r}")
    sys.exit(0 if worst <= args.max_diff and texts[0] == texts[1] else 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--site", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--prompt", default="a green triangle")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--chromium", default="/usr/bin/chromium")
    r.add_argument("--load-timeout", type=int, default=600, help="seconds")
    r.add_argument("--generate-timeout", type=int, default=2400, help="seconds")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--max-diff", type=int, default=2)
    args = parser.parse_args()
    run(args) if args.command == "run" else compare(args)


if __name__ == "__main__":
    main()
