#!/usr/bin/env bash
# The page in a real headless browser against the native CLI (docs/web-page.md):
#
#   scripts/browser-test.sh OUTDIR
#
# 1. installs what is missing, from package registries only: Debian's chromium (apt), Python
#    playwright (pip; it drives /usr/bin/chromium, no browser download); build-web.sh installs
#    the wasm target and wasm-bindgen-cli;
# 2. builds the page (scripts/build-web.sh target/web-dist);
# 3. serves it on 127.0.0.1 and generates "a green triangle" at seed 0 with the CLI defaults in
#    headless Chromium with WebGPU (swiftshader): OUTDIR/browser.png, OUTDIR/page.png;
# 4. runs `stipple generate "a green triangle" --seed 0 -o OUTDIR/native.png`;
# 5. exits 0 only when the images differ by at most 2/255 per channel and carry the same
#    `parameters` text.
# Times per image (browser and native) are printed and kept in OUTDIR/browser.json and
# OUTDIR/native.log. Environment: GENERATE_TIMEOUT (s, default 2400), SKIP_BUILD=1 (reuse
# target/web-dist and the native binary), STIPPLE (the native binary, default
# target/release/stipple), STIPPLE_CHROMIUM_FLAGS.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUT=$1
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PROMPT="a green triangle"
SEED=0
GENERATE_TIMEOUT=${GENERATE_TIMEOUT:-2400}
STIPPLE=${STIPPLE:-target/release/stipple}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

if ! [ -x /usr/bin/chromium ]; then
    echo "browser-test: installing Debian's chromium (apt)" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y --no-install-recommends chromium
fi
if ! python3 -c 'import playwright' 2>/dev/null; then
    echo "browser-test: installing playwright (pip; the browser is Debian's, none is downloaded)" >&2
    python3 -m pip install --quiet playwright || python3 -m pip install --quiet --break-system-packages playwright
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    scripts/build-web.sh target/web-dist
    cargo build --release
fi

# Browser first, then native: one at a time, so the two timings do not share the CPU.
timeout $((GENERATE_TIMEOUT + 900)) python3 scripts/browser_test.py run --site target/web-dist --out "$OUT" \
    --prompt "$PROMPT" --seed "$SEED" --generate-timeout "$GENERATE_TIMEOUT"

start=$(date +%s.%N)
timeout "$GENERATE_TIMEOUT" "$STIPPLE" generate "$PROMPT" --seed "$SEED" -o "$OUT/native.png" 2>&1 | tee "$OUT/native.log"
end=$(date +%s.%N)
echo "browser-test: native CLI $(python3 -c "print(f'{$end - $start:.1f}')") s in all; its timings: $(tail -n 1 "$OUT/native.log")"
python3 -c 'import json, sys; t = json.load(open(sys.argv[1])); print("browser-test: browser %.1f s per image (model load %.1f s), Chromium %s" % (t["generate_s"], t["load_s"], t["browser"]))' "$OUT/browser.json"

python3 scripts/browser_test.py compare "$OUT/browser.png" "$OUT/native.png" --max-diff 2
