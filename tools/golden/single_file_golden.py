#!/usr/bin/env python3
"""Independent check of stipple's LDM single-file name table: diffusers loads the files that
`stipple convert FOLDER FILE` writes, and every tensor must equal the folder's.

Versions: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1, transformers==5.24.0,
safetensors==0.8.0 (the other golden scripts' pins).

  cargo build --release
  python3 tools/golden/single_file_golden.py                  # uses target/release/stipple

For each fixture folder (tiny-sd1: SD1 layout, f32; tiny-sd2: SD2/OpenCLIP layout, f16;
tiny-pipe: SD1 layout with layers_per_block 1, f16) it runs `stipple convert` into a temporary
directory, then loads the file with `StableDiffusionPipeline.from_single_file(file,
config=folder)` (diffusers' own LDM converter: `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_open_clip_checkpoint`, …) and the folder with
`from_pretrained(folder)`, and compares the UNet, VAE and text encoder state dicts exactly
(same names, shapes and bits, both loaded as float32, which f16 converts to exactly;
`position_ids` buffers excepted). Writes nothing under
the repository; exits non-zero on any difference.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile

import torch
from diffusers import StableDiffusionPipeline

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ["tiny-sd1", "tiny-sd2", "tiny-pipe"]


def compare(name, a, b):
    """Exact comparison of two state dicts; returns the number of problems printed."""
    a = {k: v for k, v in a.items() if not k.endswith("position_ids")}
    b = {k: v for k, v in b.items() if not k.endswith("position_ids")}
    problems = 0
    for k in sorted(set(a) ^ set(b)):
        print(f"  {name}: {k} only in {'folder' if k in a else 'single file'}")
        problems += 1
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
            print(f"  {name}: {k} differs: {tuple(x.shape)} {x.dtype} vs {tuple(y.shape)} {y.dtype}")
            problems += 1
    print(f"  {name}: {len(a)} tensors, {problems} differences")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stipple", default=str(ROOT / "target/release/stipple"))
    args = parser.parse_args()
    torch.manual_seed(0)
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for fixture in FIXTURES:
            folder = ROOT / "tests/fixtures/models" / fixture
            file = pathlib.Path(tmp) / f"{fixture}.safetensors"
            subprocess.run([args.stipple, "convert", str(folder), str(file)], check=True)
            print(f"{fixture}: {file.stat().st_size} bytes")
            # Both in float32: f16 → f32 is exact, so equality stays bit-for-bit.
            ref = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, torch_dtype=torch.float32)
            single = StableDiffusionPipeline.from_single_file(
                str(file), config=str(folder), local_files_only=True, torch_dtype=torch.float32
            )
            for part in ["unet", "vae", "text_encoder"]:
                total += compare(part, getattr(ref, part).state_dict(), getattr(single, part).state_dict())
    print("OK: every tensor equal" if total == 0 else f"FAILED: {total} differences")
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
