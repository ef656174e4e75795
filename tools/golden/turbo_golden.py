#!/usr/bin/env python3
"""Write tests/fixtures/models/tiny-turbo/: a tiny SD-Turbo-style pipeline (SD2.1 architecture,
SD-Turbo's Euler trailing scheduler config) + goldens of diffusers' StableDiffusionPipeline runs
without guidance.

Versions used for the committed fixtures: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1,
transformers==5.24.0, safetensors==0.8.0.

  python3 tools/golden/turbo_golden.py           # (re)writes tiny-turbo/
  python3 tools/golden/turbo_golden.py --check   # reload, recompute, compare (writes nothing)

Deterministic: fixed seeds, one torch thread; a rerun writes byte-identical files.

The folder is what `StableDiffusionPipeline.save_pretrained(dir, safe_serialization=True)` writes,
except tokenizer/: only SD2's tokenizer_config.json and special_tokens_map.json (pad "!") are
committed; vocab.json, merges.txt and LICENSE are weights/clip_tokenizer/'s and are copied in
by whoever assembles the folder (this script into a temporary directory, tests/hub_folders.rs into
a scratch one), to keep the fixture small.

  text_encoder  CLIPTextModel, full vocab 49408 (the real tokenizer's ids fit), hidden 4, 2 layers,
                2 heads, gelu (SD2's OpenCLIP-style), f16 on disk, no `text_model.` prefix.
  unet          SD2.1-like: linear proj_in/proj_out, per-block attention_head_dim (2, 4),
                upcast_attention, block_out_channels (16, 32), cross_attention_dim 4.
  vae           as tiny-pipe ((8, 16), 4 groups, factor 2, scaling_factor 0.18215).
  scheduler     stabilityai/sd-turbo's scheduler_config.json (EulerDiscreteScheduler, trailing).

Runs (guidance_scale 0.0: no negative prompt, UNet batch 1; image 16 x 24, latents randn seed 42,
generator seed 1234, fresh per run):
  euler_a_1, euler_a_4   EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config), 1 / 4 steps
  euler_2                the folder's own EulerDiscreteScheduler, 2 steps
golden_turbo.safetensors: latents (1, 4, 8, 12) NCHW before init_noise_sigma; image.<run>
(1, 16, 24, 3) in [0, 1]; final_latents.<run>. golden_turbo.json: settings and per-run timesteps.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import diffusers
import safetensors
import transformers
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models_golden import reinit, write_tokenizer  # noqa: E402
from pipeline_golden import LastLatents  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "weights" / "clip_tokenizer"
DIR = ROOT / "tests" / "fixtures" / "models" / "tiny-turbo"
GOLDEN = "golden_turbo.safetensors"
INFO = "golden_turbo.json"
SHARED_TOKENIZER_FILES = ["vocab.json", "merges.txt", "LICENSE"]

SEED = 5  # reinit seeds 501 (text encoder), 502 (unet), 503 (vae)
SEQ = 77

# stabilityai/sd-turbo scheduler/scheduler_config.json
SD_TURBO = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "timestep_spacing": "trailing", "timestep_type": "discrete", "trained_betas": None,
    "use_karras_sigmas": False,
}
TEXT = dict(vocab_size=49408, hidden_size=4, intermediate_size=9, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=SEQ, hidden_act="gelu", bos_token_id=49406, eos_token_id=49407,
            pad_token_id=0, projection_dim=4)
UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=4, attention_head_dim=(2, 4), norm_num_groups=4, use_linear_projection=True,
            upcast_attention=True)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
           norm_num_groups=4, sample_size=16, scaling_factor=0.18215,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)

PROMPT = "a cinematic photo of a lighthouse at dusk"
HEIGHT, WIDTH = 16, 24
LATENT_SHAPE = (1, 4, 8, 12)
PIPE_SEED = 1234
LATENT_SEED = 42
# run -> (scheduler class or None for the folder's own, steps)
RUNS = {"euler_a_1": (EulerAncestralDiscreteScheduler, 1), "euler_a_4": (EulerAncestralDiscreteScheduler, 4),
        "euler_2": (None, 2)}


def write_folder():
    if DIR.exists():
        shutil.rmtree(DIR)
    torch.manual_seed(SEED)
    te = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
    unet = UNet2DConditionModel(**UNET).eval()
    vae = AutoencoderKL(**VAE).eval()
    for i, m in enumerate((te, unet, vae)):
        reinit(m, SEED * 100 + 1 + i)
        m.half()
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=CLIPTokenizer.from_pretrained(str(VOCAB)), unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SD_TURBO),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(DIR), safe_serialization=True)
    write_tokenizer(DIR / "tokenizer", "!")
    for name in SHARED_TOKENIZER_FILES:
        (DIR / "tokenizer" / name).unlink()


def assemble(dst: Path):
    """The fixture plus the shared tokenizer files: a complete folder."""
    shutil.copytree(DIR, dst, ignore=shutil.ignore_patterns("golden_*"))
    for name in SHARED_TOKENIZER_FILES:
        shutil.copyfile(VOCAB / name, dst / "tokenizer" / name)


def compute(folder: Path):
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    tok = pipe.tokenizer
    assert tok.pad_token == "!" and tok.pad_token_id == 0
    own = pipe.scheduler
    assert type(own) is EulerDiscreteScheduler and own.config.timestep_spacing == "trailing"
    t = {"latents": torch.randn(LATENT_SHAPE, generator=torch.Generator("cpu").manual_seed(LATENT_SEED))}
    runs = {}
    for name, (cls, steps) in RUNS.items():
        pipe.scheduler = cls.from_config(own.config) if cls else own
        cb = LastLatents()
        unet_batches = []
        hook = pipe.unet.register_forward_pre_hook(lambda m, a, kw: unet_batches.append(a[0].shape[0]),
                                                   with_kwargs=True)
        img = pipe(PROMPT, num_inference_steps=steps, guidance_scale=0.0, height=HEIGHT, width=WIDTH,
                   latents=t["latents"].clone(), generator=torch.Generator("cpu").manual_seed(PIPE_SEED),
                   output_type="np", callback_on_step_end=cb).images
        hook.remove()
        assert unet_batches == [1] * steps, unet_batches  # no negative branch
        img = torch.from_numpy(img)
        t[f"image.{name}"] = img
        t[f"final_latents.{name}"] = cb.latents
        s = pipe.scheduler
        runs[name] = dict(scheduler=type(s).__name__, timestep_spacing=s.config.timestep_spacing,
                          num_inference_steps=steps, unet_timesteps=cb.timesteps,
                          init_noise_sigma=float(s.init_noise_sigma), unet_batch=1,
                          image_std=float(img.std()))
    t = {k: v.detach().contiguous() for k, v in t.items()}
    info = dict(
        generator="tools/golden/turbo_golden.py",
        versions=dict(python=sys.version.split()[0], torch=torch.__version__, diffusers=diffusers.__version__,
                      transformers=transformers.__version__, safetensors=safetensors.__version__),
        prompt=PROMPT, guidance_scale=0.0, height=HEIGHT, width=WIDTH, pipe_seed=PIPE_SEED,
        latents=f"torch.randn({LATENT_SHAPE}, generator=torch.Generator('cpu').manual_seed({LATENT_SEED}))",
        runs=runs,
    )
    return t, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if not args.check:
        write_folder()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        folder = Path(tmp) / "tiny-turbo"
        assemble(folder)
        tensors, info = compute(folder)
    if not args.check:
        save_file(tensors, str(DIR / GOLDEN))
        (DIR / INFO).write_text(json.dumps(info, indent=2) + "\n")
    gold = load_file(str(DIR / GOLDEN))
    ok = set(gold) == set(tensors) and all(torch.equal(gold[k], tensors[k]) for k in gold)
    for name, r in info["runs"].items():
        print(f"{name:10s} t {r['unet_timesteps']} init_noise_sigma {r['init_noise_sigma']:.4f} "
              f"image std {r['image_std']:.4f}")
    print("check:", "exact" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
