#!/usr/bin/env bash
# GPU benchmark run: build, adapter info, tests, kernel table, a UNet step at SD1.5 size in f16
# and f32, the VAE decoder and the text encoder (`stipple bench unet|vae|clip`: ms, FLOPs,
# GFLOP/s against the measured peak, per-kernel and per-module tables, `--json` lines), and,
# where PyTorch + diffusers see a CUDA GPU, diffusers' fp16 UNet forward (SDPA) on the same GPU
# — and the peers benchmark (burn's wgpu backend, bench/peers) — everything into one log.
#
#   scripts/gpu-bench.sh [LOG]          full run (SD1.5 512×512, batch 2 = CFG)
#   TINY=1 scripts/gpu-bench.sh [LOG]   dry run at tiny sizes (lavapipe, CI): checks the script
#
# Environment: SIZE (image side, default 512), ITERS (kernel timing runs, default 3),
# SKIP_TESTS=1, SKIP_BUILD=1, STIPPLE (binary, default target/release/stipple),
# MODEL (a model folder or single file to bench instead of SD1.5's random weights),
# STEP_TIMEOUT (s per step).
# A step that fails is logged with its exit code and the run goes on; the script exits non-zero
# if any step failed.

set -uo pipefail
cd "$(dirname "$0")/.."

LOG=${1:-gpu-bench-$(date -u +%Y%m%dT%H%M%SZ).log}
TINY=${TINY:-0}
if [ "$TINY" = 1 ]; then
    SIZE=${SIZE:-64}
    ITERS=${ITERS:-1}
    KERNEL_LATENT=4
else
    SIZE=${SIZE:-512}
    ITERS=${ITERS:-3}
    KERNEL_LATENT=$((SIZE / 8))
fi
STIPPLE=${STIPPLE:-target/release/stipple}
STEP_TIMEOUT=${STEP_TIMEOUT:-3600}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FAILED=()

log() { echo "$*" | tee -a "$LOG"; }

# run NAME CMD...: log the command, its output and exit code; remember failures.
run() {
    local name=$1
    shift
    log ""
    log "=== $name ($(date -u +%H:%M:%S) UTC)"
    log "\$ $*"
    local start=$SECONDS
    timeout "$STEP_TIMEOUT" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    log "[$name: exit $rc after $((SECONDS - start)) s]"
    [ "$rc" = 0 ] || FAILED+=("$name")
    return "$rc"
}

has_subcommand() { "$STIPPLE" "$@" --help >/dev/null 2>&1; }

: >"$LOG"
log "stipple GPU benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), size $SIZE, tiny=$TINY"
log "host: $(uname -srm), $(nproc) CPUs, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
command -v nvidia-smi >/dev/null && run "nvidia-smi" nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

# 1. Build.
if [ "${SKIP_BUILD:-0}" != 1 ] && command -v cargo >/dev/null; then
    run "build" cargo build --release || { log "build failed"; exit 1; }
elif [ ! -x "$STIPPLE" ]; then
    log "no cargo and no $STIPPLE: nothing to run"
    exit 1
else
    log "using the prebuilt $STIPPLE (no cargo here or SKIP_BUILD=1)"
fi

# 2. Adapter.
run "info" "$STIPPLE" info

# 3. Tests (on this machine's default adapter; CI=true: no test may skip for want of one).
if [ "${SKIP_TESTS:-0}" != 1 ] && command -v cargo >/dev/null; then
    CI=true run "tests" cargo test --release
fi

# 4. Kernels, f16 and f32, every attention variant side by side, for both kernel variants
#    (`gpu`: workgroup-memory tiles, the default here; `cpu`: the lavapipe-shaped kernels), and
#    the tiled GEMMs once more with wgpu's shader runtime checks on (default: off for the GEMM
#    kernels, docs/kernels.md) to see what the checks cost.
for variant in gpu cpu; do
    for dtype in f16 f32; do
        run "bench kernels $dtype, $variant kernels" env STIPPLE_FORCE_VARIANT="$variant" \
            "$STIPPLE" bench kernels --dtype "$dtype" --variants \
            --latent "$KERNEL_LATENT" --iters "$ITERS"
    done
done
for only in matmul conv2d; do
    run "bench kernels f16, gpu kernels, $only, shader checks on" env STIPPLE_FORCE_VARIANT=gpu \
        STIPPLE_SHADER_CHECKS=on "$STIPPLE" bench kernels --dtype f16 --only "$only" \
        --latent "$KERNEL_LATENT" --iters "$ITERS"
done

# 5. Whole models: a UNet step (f16 and f32), the VAE decoder and the text encoder, each as a
#    table with the per-kernel and per-module profile, then as one `--json` line. Weights:
#    $MODEL (a folder or single file), else the SD1.5 family's random weights made in memory
#    (TINY: the tiny test pipeline).
if [ -n "${MODEL:-}" ]; then
    FAMILY=$MODEL
elif [ "$TINY" = 1 ]; then
    FAMILY=tests/fixtures/models/tiny-pipe
else
    FAMILY=sd15
fi
MODEL_SIZE=()
[ "$TINY" = 1 ] || MODEL_SIZE=(--size "$SIZE")
bench_model() { # NAME ARGS...: the profiled table, then the JSON line
    local name=$1
    shift
    run "bench $name" "$STIPPLE" bench "$@" --family "$FAMILY" "${MODEL_SIZE[@]}" \
        --iters "$ITERS" --profile
    run "bench $name json" "$STIPPLE" bench "$@" --family "$FAMILY" "${MODEL_SIZE[@]}" \
        --iters "$ITERS" --json
}
for dtype in f16 f32; do
    bench_model "unet $dtype" unet --dtype "$dtype"
done
bench_model "vae" vae
bench_model "clip" clip

# 6. diffusers' fp16 UNet forward on the same GPU (random weights from the same config: no
#    download), batch 2, SDPA attention.
if python3 -c "import torch, diffusers" >/dev/null 2>&1; then
    # The UNet config: $MODEL's, else a random SD1.5 folder's (`stipple init-random`), else
    # (TINY) the tiny test pipeline's.
    MODEL_DIR=${MODEL:-}
    if [ -z "$MODEL_DIR" ] && [ "$TINY" != 1 ]; then
        MODEL_DIR=$WORK/sd15
        run "init-random sd15" "$STIPPLE" init-random --family sd15 --layout folder "$MODEL_DIR" ||
            MODEL_DIR=""
    fi
    MODEL_DIR=${MODEL_DIR:-tests/fixtures/models/tiny-pipe}
    CONFIG=$MODEL_DIR/unet/config.json
    run "diffusers UNet fp16" env CONFIG="$CONFIG" SIZE="$SIZE" TINY="$TINY" python3 - <<'PY'
import json, os, time
import torch
import diffusers
from diffusers import UNet2DConditionModel

tiny = os.environ["TINY"] == "1"
if torch.cuda.is_available():
    device, dtype = "cuda", torch.float16
elif tiny:
    device, dtype = "cpu", torch.float32  # dry run of the script only
else:
    raise SystemExit("no CUDA device: diffusers timing skipped")
with open(os.environ["CONFIG"]) as f:
    config = json.load(f)
torch.manual_seed(0)
unet = UNet2DConditionModel.from_config(config).to(device=device, dtype=dtype).eval()
unet.set_default_attn_processor()  # AttnProcessor2_0: scaled_dot_product_attention
latent = int(os.environ["SIZE"]) // 8 if not tiny else config.get("sample_size", 8)
if not isinstance(latent, int):
    latent = latent[0]
sample = torch.randn(2, config["in_channels"], latent, latent, device=device, dtype=dtype)
context = torch.randn(2, 77, config["cross_attention_dim"], device=device, dtype=dtype)
t = torch.tensor([500, 500], device=device)
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
with torch.inference_mode():
    for _ in range(3):
        unet(sample, t, encoder_hidden_states=context)
    sync()
    n = 3 if tiny else 20
    start = time.perf_counter()
    for _ in range(n):
        unet(sample, t, encoder_hidden_states=context)
    sync()
    ms = (time.perf_counter() - start) / n * 1e3
name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
print(f"diffusers {diffusers.__version__} torch {torch.__version__} on {name}: "
      f"UNet forward batch 2, latent {latent}x{latent}, {dtype}: {ms:.1f} ms/step")
PY
else
    log "(PyTorch + diffusers not installed: diffusers timing skipped)"
fi

# 7. Peers side by side: burn's wgpu backend on the same adapter, kernel by kernel
#    (bench/peers, its own crate; docs/peers.md). Its build needs burn's crates: where they
#    cannot be fetched or built (an offline machine without them), the step is skipped.
PEERS=bench/peers/target/release/stipple-peers
if [ "${SKIP_BUILD:-0}" != 1 ] && ! [ -x "$PEERS" ]; then
    cargo build --release --manifest-path bench/peers/Cargo.toml >>"$LOG" 2>&1 ||
        log "(bench/peers could not be built: peers benchmark skipped)"
fi
if [ -x "$PEERS" ]; then
    run "peers: stipple vs burn-wgpu" "$PEERS" --latent "$KERNEL_LATENT" --iters "$ITERS"
else
    log "(no $PEERS: peers benchmark skipped)"
fi

log ""
if [ ${#FAILED[@]} -gt 0 ]; then
    log "FAILED steps: ${FAILED[*]}"
    exit 1
fi
log "all steps passed; log: $LOG"
