#!/usr/bin/env python3
"""Write tests/fixtures/taesd/: a tiny random diffusers AutoencoderTiny (TAESD) folder and the
output of its decoder on fixed latents, for tests/model_taesd.rs.

Versions used for the committed fixtures: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1,
safetensors==0.8.0, numpy.

  python3 tools/golden/taesd_golden.py           # (re)writes tests/fixtures/taesd/
  python3 tools/golden/taesd_golden.py --check   # recompute and compare with the committed goldens

Deterministic: torch.manual_seed(0), one torch thread; a rerun writes byte-identical files.

Model (tests/fixtures/taesd/tiny/, saved with save_pretrained in float32, encoder included so the
loader's "encoder weights ignored" is exercised): AutoencoderTiny(latent_channels=4,
encoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1), decoder_block_out_channels=(8, 8),
num_decoder_blocks=(2, 1), act_fn="relu", upsampling_scaling_factor=2). Two decoder stages
upscale x2, the factor of the tiny-pipe test model's VAE, so the CLI tests can preview that
model with it. Weights: torch's default init, then every conv weight x2 and bias ~ N(0, 0.1)
so activations neither die nor vanish through the ReLUs.

tests/fixtures/taesd/tiny-x4/: the same kind of model with three decoder stages (x4), no golden:
the pipeline must refuse it for the x2 tiny-pipe model.

golden_taesd.safetensors (float32, NCHW as PyTorch):
  latents  (2, 4, 5, 7)   randn x 2.5 (values past +-3 exercise the 3*tanh(x/3) clamp)
  image    (2, 3, 10, 14) AutoencoderTiny.decode(latents).sample, in about [-1, 1]
"""

import argparse
import os
import sys

import torch

torch.set_num_threads(1)

from diffusers import AutoencoderTiny  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "taesd")


def build(stages=2):
    torch.manual_seed(0)
    model = AutoencoderTiny(
        latent_channels=4,
        encoder_block_out_channels=(8,) * stages,
        num_encoder_blocks=(1,) * stages,
        decoder_block_out_channels=(8,) * stages,
        num_decoder_blocks=(2,) + (1,) * (stages - 1),
        act_fn="relu",
        upsampling_scaling_factor=2,
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                p.mul_(2.0)
            else:
                p.copy_(torch.randn_like(p) * 0.1)
    latents = torch.randn(2, 4, 5, 7) * 2.5
    with torch.no_grad():
        image = model.decode(latents).sample
    return model, {"latents": latents.contiguous(), "image": image.contiguous()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    model, golden = build()
    path = os.path.join(ROOT, "golden_taesd.safetensors")
    if args.check:
        old = load_file(path)
        for k, v in golden.items():
            if not torch.equal(old[k], v):
                print(f"{k} differs: max {(old[k] - v).abs().max()}")
                sys.exit(1)
        print("ok")
        return
    os.makedirs(ROOT, exist_ok=True)
    model.save_pretrained(os.path.join(ROOT, "tiny"), safe_serialization=True)
    build(stages=3)[0].save_pretrained(os.path.join(ROOT, "tiny-x4"), safe_serialization=True)
    save_file(golden, path)
    img = golden["image"]
    print(f"image {tuple(img.shape)} min {img.min():.3f} max {img.max():.3f} std {img.std():.3f}")


if __name__ == "__main__":
    main()
