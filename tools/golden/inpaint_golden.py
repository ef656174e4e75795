#!/usr/bin/env python3
"""Write tests/fixtures/models/tiny-inpaint/: a tiny 9-channel inpainting UNet for tiny-pipe + goldens of diffusers' StableDiffusionInpaintPipeline.

Versions used for the committed fixtures: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1,
transformers==5.24.0, safetensors==0.8.0.

  python3 tools/golden/inpaint_golden.py           # (re)writes tiny-inpaint/
  python3 tools/golden/inpaint_golden.py --check   # recompute, compare with the stored files

Deterministic: fixed seeds, one torch thread, deterministic algorithms; a rerun writes
byte-identical files.

Only the UNet is new: `tiny-inpaint/unet/` is tiny-pipe's UNet config with in_channels 9
(latents 4 + mask 1 + masked-image latents 4), re-initialised with models_golden.reinit (seed
304) and saved as float16. The text encoder, tokenizer, VAE and scheduler are tiny-pipe's
(pipeline_golden.py): a test assembles the inpainting folder as tiny-pipe with unet/ replaced.

Runs (golden_inpaint.safetensors, float32 unless stated): every run uses prompt / negative /
16 x 24 image of pipeline_golden.py, guidance 7.5, generator torch.Generator('cpu').manual_seed(1234)
and no `latents=` (the pipeline draws them), output_type="np":
  init_image   (16, 24, 3) uint8: pipeline_golden.init_image()
  mask         (16, 24, 3) uint8 RGB mask (white = repaint); grey levels 127/128 straddle the
               0.5 binarization after PIL's convert("L")
  mask_small   (8, 12, 3) uint8: a half-size mask (diffusers resizes it, PIL Lanczos, to 16 x 24)
  image.<run>  (B, 16, 24, 3) in [0, 1]
  mask_condition.<run> (1, 1, 16, 24): the binarized mask the pipeline computed
runs (name: unet, scheduler, steps, strength, mask, batch):
  unet9_ddim         9-ch  ddim     6  1.0  mask        1
  unet9_ddim_s06     9-ch  ddim     6  0.6  mask        1
  unet9_euler_a      9-ch  euler-a  6  1.0  mask        1
  unet9_small_mask   9-ch  ddim     6  1.0  mask_small  1
  unet9_batch2       9-ch  ddim     6  0.6  mask        2 (num_images_per_prompt)
  unet4_ddim_s06     tiny-pipe's 4-ch UNet (latent blend)  ddim     6  0.6  mask  1
  unet4_euler_a      tiny-pipe's 4-ch UNet (latent blend)  euler-a  6  1.0  mask  1
golden_inpaint.json: versions, per run its settings, the generator draws (caller, shape) in order
and image stats.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import diffusers
import safetensors
import transformers
from diffusers import (DDIMScheduler, EulerAncestralDiscreteScheduler, StableDiffusionInpaintPipeline,
                       UNet2DConditionModel)
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models_golden import reinit  # noqa: E402
import pipeline_golden as pg  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DIR = ROOT / "tests" / "fixtures" / "models" / "tiny-inpaint"
GOLDEN = "golden_inpaint.safetensors"
INFO = "golden_inpaint.json"
UNET9 = dict(pg.UNET, in_channels=9)
GUIDANCE = 7.5

SCHEDULERS = {"ddim": (DDIMScheduler, {}), "euler-a": (EulerAncestralDiscreteScheduler, {})}
# name -> (unet: 9 or 4, scheduler, steps, strength, mask key, images per prompt)
RUNS = {
    "unet9_ddim": (9, "ddim", 6, 1.0, "mask", 1),
    "unet9_ddim_s06": (9, "ddim", 6, 0.6, "mask", 1),
    "unet9_euler_a": (9, "euler-a", 6, 1.0, "mask", 1),
    "unet9_small_mask": (9, "ddim", 6, 1.0, "mask_small", 1),
    "unet9_batch2": (9, "ddim", 6, 0.6, "mask", 2),
    "unet4_ddim_s06": (4, "ddim", 6, 0.6, "mask", 1),
    "unet4_euler_a": (4, "euler-a", 6, 1.0, "mask", 1),
}


def masks():
    """A repaint rectangle with grey 127 / 128 edges and coloured pixels (so convert("L") matters)."""
    h, w = pg.HEIGHT, pg.WIDTH
    m = np.zeros((h, w, 3), np.uint8)
    m[4:12, 7:18] = 255
    m[4:12, 6] = 128  # L 128 -> 0.502 -> repaint
    m[4:12, 18] = 127  # L 127 -> 0.498 -> keep
    m[2, 2] = (255, 200, 0)  # L = (255*19595 + 200*38470 + 2**15) >> 16 = 194 -> repaint
    m[13, 20] = (0, 0, 255)  # L 29 -> keep
    small = np.zeros((h // 2, w // 2, 3), np.uint8)
    small[2:6, 3:9] = 255
    small[1, 1] = 160
    return m, small


def write_unet():
    if DIR.exists():
        shutil.rmtree(DIR)
    torch.manual_seed(pg.SEED)
    unet = UNet2DConditionModel(**UNET9).eval()
    reinit(unet, pg.SEED * 100 + 4)
    unet.half()
    unet.save_pretrained(str(DIR / "unet"), safe_serialization=True)


def load_unet9():
    unet = UNet2DConditionModel.from_pretrained(str(DIR / "unet"), torch_dtype=torch.float32).eval()
    assert unet.config.in_channels == 9
    sd = load_file(str(DIR / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in sd.values()} == {torch.float16}
    return unet


def compute(base, unet9):
    t, runs = {}, {}
    init = pg.init_image()
    mask, small = masks()
    t["init_image"] = torch.from_numpy(init)
    t["mask"] = torch.from_numpy(mask)
    t["mask_small"] = torch.from_numpy(small)
    pil = {"mask": PIL.Image.fromarray(mask), "mask_small": PIL.Image.fromarray(small)}
    base_cfg = base.scheduler.config
    for name, (channels, sched, steps, strength, mask_key, n) in RUNS.items():
        cls, over = SCHEDULERS[sched]
        pipe = StableDiffusionInpaintPipeline(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
            unet=unet9 if channels == 9 else base.unet, scheduler=cls.from_config(base_cfg, **over),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        seen = {}
        orig = pipe.mask_processor.preprocess

        def preprocess(*a, **k):
            seen["mask"] = orig(*a, **k).detach().clone()
            return seen["mask"]

        pipe.mask_processor.preprocess = preprocess
        cb = pg.LastLatents()
        pg.DRAWS.clear()
        img = pipe(pg.PROMPT, image=PIL.Image.fromarray(init), mask_image=pil[mask_key], strength=strength,
                   negative_prompt=pg.NEGATIVE, num_inference_steps=steps, guidance_scale=GUIDANCE,
                   height=pg.HEIGHT, width=pg.WIDTH, num_images_per_prompt=n,
                   generator=torch.Generator("cpu").manual_seed(pg.PIPE_SEED), output_type="np",
                   callback_on_step_end=cb).images
        img = torch.from_numpy(img)
        assert img.shape == (n, pg.HEIGHT, pg.WIDTH, 3)
        t[f"image.{name}"] = img
        t[f"mask_condition.{name}"] = seen["mask"]
        runs[name] = dict(unet_in_channels=channels, scheduler=pg.sched_info(pipe.scheduler), steps=steps,
                          strength=strength, mask=mask_key, num_images_per_prompt=n, guidance_scale=GUIDANCE,
                          unet_timesteps=cb.timesteps,
                          generator_draws=[dict(caller=d["caller"], shape=d["shape"]) for d in pg.DRAWS],
                          image_stats=[pg.stats(i) for i in img])
        pg.DRAWS.clear()
    # the binarized mask is what the doc says: L >= 128 repaints
    m = t["mask_condition.unet9_ddim"][0, 0]
    assert m[5, 6] == 1 and m[5, 18] == 0 and m[2, 2] == 1 and m[13, 20] == 0 and m[5, 10] == 1
    t = {k: v.detach().contiguous() for k, v in t.items()}
    info = dict(
        generator="tools/golden/inpaint_golden.py",
        versions=dict(python=sys.version.split()[0], torch=torch.__version__, diffusers=diffusers.__version__,
                      transformers=transformers.__version__, safetensors=safetensors.__version__),
        model="tests/fixtures/models/tiny-pipe with unet/ replaced by tiny-inpaint/unet (9-ch runs)",
        unet=dict(UNET9, block_out_channels=list(UNET9["block_out_channels"]),
                  down_block_types=list(UNET9["down_block_types"]), up_block_types=list(UNET9["up_block_types"])),
        prompt=pg.PROMPT, negative_prompt=pg.NEGATIVE, height=pg.HEIGHT, width=pg.WIDTH,
        pipeline_generator=f"torch.Generator('cpu').manual_seed({pg.PIPE_SEED}), fresh for every run",
        runs=runs,
        tensors={k: dict(shape=list(v.shape), dtype=str(v.dtype).replace("torch.", "")) for k, v in sorted(t.items())},
    )
    return t, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only recompute and compare, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    pg.patch_randn()
    if not args.check:
        write_unet()
    base = pg.load_pipe()
    unet9 = load_unet9()
    with torch.no_grad():
        tensors, info = compute(base, unet9)
    if not args.check:
        save_file(tensors, str(DIR / GOLDEN))
        (DIR / INFO).write_text(json.dumps(info, indent=2) + "\n")
        print(f"wrote {DIR}")
    gold = load_file(str(DIR / GOLDEN))
    ok = set(gold) == set(tensors) and all(torch.equal(gold[k], tensors[k]) for k in tensors)
    ok = ok and json.loads((DIR / INFO).read_text()) == json.loads(json.dumps(info))
    for name, r in info["runs"].items():
        print(f"{name:18s} t {r['unet_timesteps']} draws {[d['shape'] for d in r['generator_draws']]} "
              f"std {[round(s['std'], 4) for s in r['image_stats']]}")
    print("check:", "exact" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
