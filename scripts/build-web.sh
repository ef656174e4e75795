#!/usr/bin/env bash
# Builds the web page into a folder ready to serve as static files (docs/web-page.md):
#
#   scripts/build-web.sh [DIST] [MODEL]
#     DIST   default target/web-dist
#     MODEL  a diffusers model folder, default weights/stipple-emoji-64
#
# DIST gets index.html and main.js (from web/), pkg/ (the wasm and its JS glue, by
# `wasm-bindgen --target web`), model/ (a link to MODEL) and model-manifest.json (the files the
# page fetches, with sizes). Installs what is missing: the wasm32-unknown-unknown target (rustup)
# and wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock (crates.io,
# cached in ${STIPPLE_CACHE:-~/.cache/stipple}). Serve with e.g.
#   python3 -m http.server --bind 127.0.0.1 --directory target/web-dist 8000
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=${1:-target/web-dist}
MODEL=${2:-weights/stipple-emoji-64}
CACHE=${STIPPLE_CACHE:-$HOME/.cache/stipple}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

[ -f "$MODEL/model_index.json" ] || { echo "build-web: $MODEL is not a diffusers model folder (no model_index.json)" >&2; exit 2; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "build-web: installing the wasm32-unknown-unknown target (rustup)" >&2
    rustup target add wasm32-unknown-unknown
fi

# The JS glue must come from the CLI of the same version as the crate compiled in.
VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$VERSION" ] || { echo "build-web: no wasm-bindgen in Cargo.lock" >&2; exit 2; }
BINDGEN=$CACHE/wasm-bindgen-cli-$VERSION/bin/wasm-bindgen
if ! [ -x "$BINDGEN" ]; then
    echo "build-web: installing wasm-bindgen-cli $VERSION into $CACHE (crates.io, a few minutes)" >&2
    mkdir -p "$CACHE"
    # --locked first (the CLI's own lock file); when the registry lacks a crate at that lock's
    # exact version, resolve afresh within the CLI's own version requirements.
    cargo install --locked wasm-bindgen-cli --version "=$VERSION" --root "$CACHE/wasm-bindgen-cli-$VERSION" \
        || cargo install wasm-bindgen-cli --version "=$VERSION" --root "$CACHE/wasm-bindgen-cli-$VERSION"
fi

cargo build --release --target wasm32-unknown-unknown -p stipple-web
mkdir -p "$DIST"
"$BINDGEN" --target web --no-typescript --out-dir "$DIST/pkg" "$TARGET_DIR/wasm32-unknown-unknown/release/stipple_web.wasm"
cp web/index.html web/main.js "$DIST/"
ln -sfn "$(cd "$MODEL" && pwd)" "$DIST/model"

# What the page fetches: configs, tokenizer files and weights (not READMEs, licences, training
# state); sizes for its progress bar and for the download size stated in docs.
python3 - "$MODEL" "$DIST/model-manifest.json" <<'PY'
import json, os, sys
model, out = sys.argv[1], sys.argv[2]
files = []
for dirpath, _, names in sorted(os.walk(model)):
    rel_dir = os.path.relpath(dirpath, model)
    for name in sorted(names):
        rel = name if rel_dir == "." else f"{rel_dir}/{name}"
        top_level = rel_dir == "."
        wanted = (rel == "model_index.json") if top_level else name.endswith((".json", ".txt", ".safetensors"))
        if wanted:
            files.append({"path": rel, "size": os.path.getsize(os.path.join(dirpath, name))})
name = os.path.basename(os.path.abspath(model))
json.dump({"name": name, "base": "model/", "files": files}, open(out, "w"), indent=1)
PY

wasm=$(stat -c %s "$DIST/pkg/stipple_web_bg.wasm")
glue=$(stat -c %s "$DIST/pkg/stipple_web.js")
weights=$(python3 -c 'import json,sys; print(sum(f["size"] for f in json.load(open(sys.argv[1]))["files"]))' "$DIST/model-manifest.json")
echo "build-web: $DIST ready: wasm $wasm B + JS glue $glue B + model files $weights B = $((wasm + glue + weights)) B to download"
