"""Golden for the shipped default model: diffusers' StableDiffusionPipeline on
weights/stipple-emoji-64 from fixed latents, for tests/default_model.rs.

Pinned: Python 3.11.7, torch 2.15.0 (CPU), diffusers 0.42.1, transformers 5.24.0.
Run from the repository root, after exporting the model:
    /work/pyenv/bin/python tools/golden/default_model_golden.py
Writes tests/fixtures/default_model/golden.safetensors (latents NCHW, image NHWC in [0, 1]).
Rerun whenever weights/stipple-emoji-64 changes.
"""
import json
import pathlib

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "weights" / "stipple-emoji-64"
OUT = ROOT / "tests" / "fixtures" / "default_model"
PROMPT = "an emoji of a red apple"
STEPS = 8
GUIDANCE = 5.0
SEED = 7


def main():
    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    latents = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(42), dtype=torch.float32)
    image = pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=size, width=size,
                 latents=latents.clone(), generator=torch.Generator("cpu").manual_seed(SEED),
                 output_type="np").images
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.contiguous(), "image": torch.from_numpy(image).float().contiguous()},
              str(OUT / "golden.safetensors"))
    info = {"prompt": PROMPT, "steps": STEPS, "guidance_scale": GUIDANCE, "seed": SEED, "size": size,
            "scheduler": pipe.scheduler.__class__.__name__, "image_std": float(image.std()),
            "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__}}
    (OUT / "golden.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
