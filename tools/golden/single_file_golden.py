#!/usr/bin/env python3
"""Independent check of stipple's LDM single-file name table: diffusers loads the files that
`stipple convert FOLDER FILE` writes, and every tensor must equal the folder's.

Versions: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1, transformers==5.24.0,
safetensors==0.8.0 (the other golden scripts' pins).

  cargo build --release
  python3 tools/golden/single_file_golden.py                  # uses target/release/stipple

For each fixture folder (tiny-sd1: SD1 layout, f32; tiny-sd2: SD2/OpenCLIP layout, f16;
tiny-pipe: SD1 layout with layers_per_block 1, f16; tiny-sdxl: SDXL layout, CLIP-L +
OpenCLIP-bigG-style encoders, text_time UNet, f16) it runs `stipple convert` into a temporary
directory, then loads the file with `StableDiffusionPipeline.from_single_file(file,
config=folder)` (`StableDiffusionXLPipeline` for tiny-sdxl, which also compares text_encoder_2,
`text_projection` included) (diffusers' own LDM converter: `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_open_clip_checkpoint`, …) and the folder with
`from_pretrained(folder)`, and compares the UNet, VAE and text encoder state dicts exactly
(same names, shapes and bits, both loaded as float32, which f16 converts to exactly;
`position_ids` buffers excepted). Writes nothing under
the repository; exits non-zero on any difference.

`--full-size DIR` does the same at full size for the published SD1.5 and SD2.1 architectures,
with zero f16 weights (names and shapes are what is checked there; values are checked at tiny
size): it writes each diffusers folder into DIR from the configs `stipple convert` writes for a
single file (stipple's built-in presets), converts it to a single file, adds what a real SD2
file also holds (OpenCLIP's 24th block, `text_projection`, `logit_scale`) and compares
diffusers' `from_single_file` with the folder. About 2.2 GB (SD1.5) and 2.6 GB (SD2.1) per
file; then `stipple generate -m DIR/sd15.safetensors` loads it with the built-in configs.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ["tiny-sd1", "tiny-sd2", "tiny-pipe", "tiny-sdxl"]


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


def preset_configs(stipple, name, text_key, out):
    """The configs stipple's built-in preset gives a single file of a family: a file holding
    only the tensors its detection looks at (UNet conv_in, a VAE tensor, `text_key`) is
    converted to a folder, which carries the preset's configs, tokenizer and scheduler."""
    from safetensors.torch import save_file

    marker = out / f"{name}-marker.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros([320, 4, 3, 3], dtype=torch.float16),
            "first_stage_model.encoder.conv_in.weight": torch.zeros([128, 3, 3, 3], dtype=torch.float16),
            text_key: torch.zeros([1024], dtype=torch.float16),
        },
        marker,
    )
    configs = out / f"{name}-configs"
    subprocess.run([stipple, "convert", str(marker), str(configs)], check=True)
    return configs


def zero_folder(configs, folder):
    """A zero-weight f16 diffusers folder of the architecture in `configs`."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))
    for model in [unet, vae, text]:
        model.to_empty(device="cpu")
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                if t.is_floating_point():
                    t.zero_()
        model.to(torch.float16)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(configs / "tokenizer"),
        unet=unet, scheduler=PNDMScheduler.from_pretrained(configs / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def full_size(stipple, out):
    """See the module docs (--full-size)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, text_key in [
        ("sd15", "cond_stage_model.transformer.text_model.final_layer_norm.weight"),
        ("sd21", "cond_stage_model.model.ln_final.weight"),
    ]:
        configs = preset_configs(stipple, name, text_key, out)
        folder = out / name
        zero_folder(configs, folder)
        file = out / f"{name}.safetensors"
        subprocess.run([stipple, "convert", str(folder), str(file)], check=True)
        if name == "sd21":
            sd = load_file(file)
            d = 1024
            block = "cond_stage_model.model.transformer.resblocks.23."
            for k, shape in [("ln_1.weight", [d]), ("ln_1.bias", [d]), ("ln_2.weight", [d]), ("ln_2.bias", [d]),
                             ("attn.in_proj_weight", [3 * d, d]), ("attn.in_proj_bias", [3 * d]),
                             ("attn.out_proj.weight", [d, d]), ("attn.out_proj.bias", [d]),
                             ("mlp.c_fc.weight", [4 * d, d]), ("mlp.c_fc.bias", [4 * d]),
                             ("mlp.c_proj.weight", [d, 4 * d]), ("mlp.c_proj.bias", [d])]:
                sd[block + k] = torch.zeros(shape, dtype=torch.float16)
            sd["cond_stage_model.model.text_projection"] = torch.zeros([d, d], dtype=torch.float16)
            sd["cond_stage_model.model.logit_scale"] = torch.zeros([], dtype=torch.float16)
            save_file(sd, file)
            del sd
        print(f"{name}: {file.stat().st_size} bytes")
        ref = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float16)
        single = StableDiffusionPipeline.from_single_file(
            str(file), config=str(folder), local_files_only=True, torch_dtype=torch.float16
        )
        for part in ["unet", "vae", "text_encoder"]:
            total += compare(part, getattr(ref, part).state_dict(), getattr(single, part).state_dict())
        del ref, single
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stipple", default=str(ROOT / "target/release/stipple"))
    parser.add_argument("--full-size", type=pathlib.Path, help="folder for the full-size files")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.full_size:
        total = full_size(args.stipple, args.full_size)
        print("OK: every tensor equal" if total == 0 else f"FAILED: {total} differences")
        sys.exit(1 if total else 0)
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for fixture in FIXTURES:
            folder = ROOT / "tests/fixtures/models" / fixture
            file = pathlib.Path(tmp) / f"{fixture}.safetensors"
            subprocess.run([args.stipple, "convert", str(folder), str(file)], check=True)
            print(f"{fixture}: {file.stat().st_size} bytes")
            # Both in float32: f16 → f32 is exact, so equality stays bit-for-bit.
            xl = fixture == "tiny-sdxl"
            cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
            extra = {} if xl else {"safety_checker": None}
            ref = cls.from_pretrained(folder, torch_dtype=torch.float32, **extra)
            single = cls.from_single_file(
                str(file), config=str(folder), local_files_only=True, torch_dtype=torch.float32
            )
            parts = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if xl else [])
            for part in parts:
                total += compare(part, getattr(ref, part).state_dict(), getattr(single, part).state_dict())
    print("OK: every tensor equal" if total == 0 else f"FAILED: {total} differences")
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
