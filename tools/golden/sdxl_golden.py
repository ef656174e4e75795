#!/usr/bin/env python3
"""Write tests/fixtures/models/tiny-sdxl/: a tiny random SDXL-like pipeline + diffusers goldens.

Versions used for the committed fixtures: Python 3.11, torch==2.15.0 (CPU), diffusers==0.42.1,
transformers==5.24.0, safetensors (same environment as pipeline_golden.py).

  python3 tools/golden/sdxl_golden.py           # (re)writes tiny-sdxl/
  python3 tools/golden/sdxl_golden.py --check   # reload with from_pretrained, recompute, compare

Deterministic: fixed seeds, one torch thread, deterministic algorithms.

The folder is what `StableDiffusionXLPipeline.save_pretrained(dir, safe_serialization=True)` writes
(model_index.json with force_zeros_for_empty_prompt true), tokenizer/ and tokenizer_2/ replaced by
plain copies of weights/clip_tokenizer/ (tokenizer_2 pads with "!", as SDXL ships it).

  text_encoder    CLIPTextModel, FULL vocab 49408 (the real tokenizer's ids fit), hidden 8, 2 layers,
                  2 heads, quick_gelu, eos_token_id 49407 (first-EOS pooling rule; unused by SDXL)
  text_encoder_2  CLIPTextModelWithProjection, vocab 49408, hidden 12, 3 layers, 2 heads, gelu,
                  projection_dim 12, eos_token_id 2 (SDXL's legacy value: pooled at argmax(ids))
  unet            SDXL-like: DownBlock2D at the top level (no attention), transformer_layers_per_block
                  (1, 1, 2) (2 in the last block and the mid block), legacy attention_head_dim (2, 2, 4)
                  = heads, linear projections, addition_embed_type "text_time" with
                  addition_time_embed_dim 8 and projection_class_embeddings_input_dim 12 + 6*8 = 60,
                  cross_attention_dim 8 + 12 = 20
  vae             (8, 16), 4 groups, factor 2, scaling_factor 0.13025, force_upcast true
  scheduler       EulerDiscreteScheduler with SDXL base's scheduler_config.json

Every parameter re-initialised with models_golden.reinit (seeds 1101 te, 1102 te2, 1103 unet,
1104 vae), rounded to f16 and saved as float16; goldens computed in float32 from the f16 values.

Image 16 x 24 (H x W) -> latents (1, 4, 8, 12).

golden_models.safetensors (float32, NCHW)
  te.input_ids (2, 77) int64 (tokenizer: prompt, negative), te.hidden_states.{0..2}, te.last_hidden_state
  te2.input_ids (2, 77) int64 (tokenizer_2, pad "!"), te2.hidden_states.{0..3}, te2.last_hidden_state,
  te2.text_embeds (2, 12)
  unet.sample (2, 4, 8, 12), unet.timestep (2,), unet.encoder_hidden_states (2, 77, 20),
  unet.text_embeds (2, 12), unet.time_ids (2, 6) -> unet.out, probes unet.probe.{time_proj,
  time_embedding, add_embedding, conv_in, down_blocks.i, mid_block, up_blocks.i, conv_act}
golden_pipeline.safetensors
  latents (1, 4, 8, 12) = randn(seed 42), before init_noise_sigma
  <run>.prompt_embeds (2, 77, 20) [negative, positive]; <run>.add_text_embeds (2, 12);
  <run>.add_time_ids (2, 6); <run>.final_latents; <run>.image (1, 16, 24, 3) in [0, 1]
  (turbo: no CFG, batch 1 tensors; rng.turbo.<k> its generator draws; euler_clip_skip: clip_skip=1)
  img2img.image: StableDiffusionXLImg2ImgPipeline, Euler, strength 0.6, 5 steps, guidance 5, negative
  "blurry", from init_image (16, 24, 3) uint8 (pipeline_golden.init_image)
golden_sd_clip_skip.safetensors: StableDiffusionPipeline on ../tiny-pipe with clip_skip=1 (Euler,
  4 steps, guidance 7.5, negative "blurry"): latents, image, image_no_skip
golden_pipeline.json: settings per run, timesteps the UNet saw, image stats.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models_golden import Probes, reinit, write_tokenizer  # noqa: E402
from pipeline_golden import DRAWS, init_image, patch_randn  # noqa: E402  (draw log, init image)

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "weights" / "clip_tokenizer"
DIR = ROOT / "tests" / "fixtures" / "models" / "tiny-sdxl"
SEQ = 77

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SCHED_SDXL = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  interpolation_type="linear", num_train_timesteps=1000, prediction_type="epsilon",
                  sample_max_value=1.0, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                  timestep_spacing="leading", trained_betas=None, use_karras_sigmas=False)
# stabilityai/sdxl-turbo: Euler ancestral with trailing timesteps
SCHED_TURBO = dict(SCHED_SDXL, timestep_spacing="trailing")

TEXT = dict(vocab_size=49408, hidden_size=8, intermediate_size=19, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=SEQ, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
            pad_token_id=49407, projection_dim=8)
TEXT2 = dict(vocab_size=49408, hidden_size=12, intermediate_size=29, num_hidden_layers=3, num_attention_heads=2,
             max_position_embeddings=SEQ, hidden_act="gelu", bos_token_id=0, eos_token_id=2,
             pad_token_id=1, projection_dim=12)
UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 4), cross_attention_dim=20,
            norm_num_groups=8, use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, projection_class_embeddings_input_dim=12 + 6 * 8)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
           norm_num_groups=4, sample_size=16, scaling_factor=0.13025, force_upcast=True,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)

PROMPT = "a red apple on a wooden table"
NEGATIVE = "blurry"
HEIGHT, WIDTH = 16, 24
LATENT_SHAPE = (1, 4, 8, 12)
LATENT_SEED = 42
PIPE_SEED = 1234

# name -> pipeline kwargs (besides prompt, size, latents, generator)
RUNS = {
    "euler": dict(negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=5.0),
    # negative_prompt None + force_zeros_for_empty_prompt: zero negative embeddings and pooled
    "euler_empty_negative": dict(negative_prompt=None, num_inference_steps=5, guidance_scale=5.0),
    "euler_time_ids": dict(negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=5.0,
                           original_size=(32, 40), crops_coords_top_left=(4, 2), target_size=(24, 16)),
    # clip_skip 1: the prompt (not the negative) takes hidden_states[-3] of both encoders
    "euler_clip_skip": dict(negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=5.0, clip_skip=1),
    # SDXL-Turbo style: Euler a, trailing timesteps, 2 steps, guidance 0 (batch-1 UNet)
    "turbo": dict(negative_prompt=None, num_inference_steps=2, guidance_scale=0.0),
}


def build():
    torch.manual_seed(11)
    te = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT2)).eval()
    unet = UNet2DConditionModel(**UNET).eval()
    vae = AutoencoderKL(**VAE).eval()
    for i, m in enumerate((te, te2, unet, vae)):
        reinit(m, 1101 + i)
        m.half()
    return te, te2, unet, vae


def write_folder():
    if DIR.exists():
        shutil.rmtree(DIR)
    te, te2, unet, vae = build()
    tok = CLIPTokenizer.from_pretrained(str(VOCAB))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=EulerDiscreteScheduler.from_config(SCHED_SDXL),
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.save_pretrained(str(DIR), safe_serialization=True)
    write_tokenizer(DIR / "tokenizer", None)
    write_tokenizer(DIR / "tokenizer_2", "!")


def load_pipe():
    pipe = StableDiffusionXLPipeline.from_pretrained(str(DIR), dtype=torch.float32, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.text_encoder, pipe.text_encoder_2, pipe.unet, pipe.vae):
        m.eval()
        assert {p.dtype for p in m.parameters()} == {torch.float32}
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer_2.pad_token_id == 0
    assert pipe.config.force_zeros_for_empty_prompt
    return pipe


def model_goldens(pipe):
    t = {}
    for key, tok, te in (("te", pipe.tokenizer, pipe.text_encoder), ("te2", pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tok([PROMPT, NEGATIVE], padding="max_length", max_length=SEQ, truncation=True,
                  return_tensors="pt").input_ids
        out = te(ids, output_hidden_states=True)
        t[f"{key}.input_ids"] = ids
        for i, h in enumerate(out.hidden_states):
            t[f"{key}.hidden_states.{i}"] = h
        t[f"{key}.last_hidden_state"] = out.last_hidden_state
        if key == "te2":
            t["te2.text_embeds"] = out.text_embeds
            # pooled at argmax(ids) (eos_token_id 2): the first 49407 since "!" pads with id 0
            pos = ids.argmax(-1)
            assert torch.equal(ids[torch.arange(2), pos], torch.tensor([49407, 49407]))
    g = torch.Generator().manual_seed(77)
    unet = pipe.unet
    inp = dict(sample=torch.randn((2, 4, 8, 12), generator=g), timestep=torch.tensor([999.0, 321.0]),
               encoder_hidden_states=torch.randn((2, SEQ, 20), generator=g),
               text_embeds=torch.randn((2, 12), generator=g),
               time_ids=torch.tensor([[16.0, 24.0, 0.0, 0.0, 16.0, 24.0], [1024.0, 768.0, 32.0, 8.0, 512.0, 640.0]]))
    p = Probes()
    for name in ("time_proj", "time_embedding", "add_embedding", "conv_in", "mid_block", "conv_act"):
        p.add(f"unet.probe.{name}", getattr(unet, name))
    for i, b in enumerate(unet.down_blocks):
        p.add(f"unet.probe.down_blocks.{i}", b)
    for i, b in enumerate(unet.up_blocks):
        p.add(f"unet.probe.up_blocks.{i}", b)
    out = unet(inp["sample"], inp["timestep"], encoder_hidden_states=inp["encoder_hidden_states"],
               added_cond_kwargs=dict(text_embeds=inp["text_embeds"], time_ids=inp["time_ids"])).sample
    p.remove()
    for k, v in inp.items():
        t[f"unet.{k}"] = v
    t["unet.out"] = out
    t.update(p.out)
    return t


class Capture:
    """callback_on_step_end: timesteps the UNet saw, conditioning, latents after the last step."""

    def __init__(self):
        self.timesteps, self.kw, self.latents = [], None, None

    def __call__(self, pipe, i, t, kw):
        self.timesteps.append(float(t))
        if self.kw is None:
            self.kw = {k: v.detach().clone() for k, v in kw.items() if k != "latents"}
        if i == pipe.num_timesteps - 1:
            self.latents = kw["latents"].detach().clone()
        return kw


def stats(img):
    return dict(std=float(img.std()), mean=float(img.mean()), min=float(img.min()), max=float(img.max()))


def pipeline_goldens(pipe):
    t, runs = {}, {}
    lat = torch.randn(LATENT_SHAPE, generator=torch.Generator("cpu").manual_seed(LATENT_SEED))
    t["latents"] = lat
    for name, kw in RUNS.items():
        turbo = name == "turbo"
        pipe.scheduler = (EulerAncestralDiscreteScheduler.from_config(SCHED_TURBO) if turbo
                          else EulerDiscreteScheduler.from_config(SCHED_SDXL))
        cb = Capture()
        DRAWS.clear()
        img = pipe(PROMPT, height=HEIGHT, width=WIDTH, latents=lat.clone(),
                   generator=torch.Generator("cpu").manual_seed(PIPE_SEED), output_type="np",
                   callback_on_step_end=cb,
                   callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "add_text_embeds",
                                                       "add_time_ids"], **kw).images
        img = torch.from_numpy(img)
        assert img.shape == (1, HEIGHT, WIDTH, 3)
        t[f"{name}.image"] = img
        t[f"{name}.final_latents"] = cb.latents
        t[f"{name}.prompt_embeds"] = cb.kw["prompt_embeds"]
        t[f"{name}.add_text_embeds"] = cb.kw["add_text_embeds"]
        t[f"{name}.add_time_ids"] = cb.kw["add_time_ids"]
        if kw["negative_prompt"] is None and kw["guidance_scale"] > 1:
            assert not cb.kw["prompt_embeds"][0].any() and not cb.kw["add_text_embeds"][0].any()
        g = torch.Generator("cpu").manual_seed(PIPE_SEED)
        for k, d in enumerate(DRAWS):
            d = d["tensor"]
            assert torch.equal(torch.randn(d.shape, generator=g), d)
            t[f"rng.{name}.{k}"] = d
        if not turbo:
            assert not DRAWS, name
        runs[name] = dict(scheduler=type(pipe.scheduler).__name__, scheduler_config=dict(
                              SCHED_TURBO if turbo else SCHED_SDXL),
                          kwargs={k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()},
                          unet_timesteps=cb.timesteps, init_noise_sigma=float(pipe.scheduler.init_noise_sigma),
                          generator_draws=len(DRAWS), image_stats=stats(img))
    # img2img: StableDiffusionXLImg2ImgPipeline on the same components (requires_aesthetics_score
    # False: the same 6 time ids), Euler, strength 0.6, pipeline_golden's 16 x 24 init image.
    import PIL.Image
    from diffusers import StableDiffusionXLImg2ImgPipeline
    i2i = StableDiffusionXLImg2ImgPipeline(**{k: v for k, v in pipe.components.items()},
                                           force_zeros_for_empty_prompt=True, add_watermarker=False)
    i2i.set_progress_bar_config(disable=True)
    i2i.scheduler = EulerDiscreteScheduler.from_config(SCHED_SDXL)
    init = init_image()
    t["init_image"] = torch.from_numpy(init)
    DRAWS.clear()
    cb = Capture()
    img = torch.from_numpy(i2i(PROMPT, image=PIL.Image.fromarray(init), strength=0.6, negative_prompt=NEGATIVE,
                               num_inference_steps=5, guidance_scale=5.0,
                               generator=torch.Generator("cpu").manual_seed(PIPE_SEED), output_type="np",
                               callback_on_step_end=cb).images)
    assert img.shape == (1, HEIGHT, WIDTH, 3)
    t["img2img.image"] = img
    assert len(DRAWS) == 2  # latent_dist.sample, then the noise added at the first kept timestep
    runs["img2img"] = dict(scheduler="EulerDiscreteScheduler", strength=0.6, num_inference_steps=5,
                           guidance_scale=5.0, negative_prompt=NEGATIVE, unet_timesteps=cb.timesteps,
                           init_noise_sigma=float(i2i.scheduler.init_noise_sigma), image_stats=stats(img))
    info = dict(generator="tools/golden/sdxl_golden.py",
                versions=dict(torch=torch.__version__, diffusers=diffusers.__version__,
                              transformers=transformers.__version__),
                prompt=PROMPT, height=HEIGHT, width=WIDTH,
                latents=f"torch.randn({LATENT_SHAPE}, generator=manual_seed({LATENT_SEED}))",
                pipeline_generator=f"torch.Generator('cpu').manual_seed({PIPE_SEED}) per run",
                runs=runs)
    return t, info


def sd_clip_skip():
    """StableDiffusionPipeline clip_skip on tiny-pipe (f32 from its f16 weights): the prompt takes
    final_layer_norm(hidden_states[-2]); the negative keeps last_hidden_state."""
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(str(ROOT / "tests/fixtures/models/tiny-pipe"), safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False,
                                                   dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    # diffusers 0.42.1 reads text_encoder.text_model.final_layer_norm, a wrapper transformers 5
    # removed (CLIPTextModel holds final_layer_norm itself): point text_model at the model, outside
    # nn.Module's registry, so diffusers' own clip_skip code runs unchanged.
    if not hasattr(pipe.text_encoder, "text_model"):
        object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)
    base = pipe.scheduler.config
    pipe.scheduler = EulerDiscreteScheduler.from_config(base)
    lat = torch.randn(LATENT_SHAPE, generator=torch.Generator("cpu").manual_seed(LATENT_SEED))
    t = {"latents": lat}
    for name, skip in (("image", 1), ("image_no_skip", None)):
        img = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=7.5, height=HEIGHT,
                   width=WIDTH, latents=lat.clone(), generator=torch.Generator("cpu").manual_seed(PIPE_SEED),
                   output_type="np", clip_skip=skip).images
        t[name] = torch.from_numpy(img)
    assert (t["image"] - t["image_no_skip"]).abs().max() > 0.01
    return t


def contig(d):
    return {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in d.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only reload and compare, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    patch_randn()
    if not args.check:
        write_folder()
    pipe = load_pipe()
    with torch.no_grad():
        models = contig(model_goldens(pipe))
        tensors, info = pipeline_goldens(pipe)
        tensors = contig(tensors)
        sd_skip = contig(sd_clip_skip())
    if not args.check:
        save_file(models, str(DIR / "golden_models.safetensors"))
        save_file(tensors, str(DIR / "golden_pipeline.safetensors"))
        save_file(sd_skip, str(DIR / "golden_sd_clip_skip.safetensors"))
        (DIR / "golden_pipeline.json").write_text(json.dumps(info, indent=2) + "\n")
        for name, r in info["runs"].items():
            assert r["image_stats"]["std"] > 0.02, (name, r["image_stats"])
    ok = True
    for fname, now in (("golden_models.safetensors", models), ("golden_pipeline.safetensors", tensors),
                       ("golden_sd_clip_skip.safetensors", sd_skip)):
        gold = load_file(str(DIR / fname))
        if set(gold) != set(now):
            ok = False
            print(fname, "names differ", sorted(set(gold) ^ set(now)))
        for k in sorted(set(gold) & set(now)):
            if not torch.equal(gold[k], now[k]):
                ok = False
                print(f"MISMATCH {fname} {k}")
    for name, r in info["runs"].items():
        print(f"{name:22s} t {r['unet_timesteps']} sigma0 {r['init_noise_sigma']:.4f} image {r['image_stats']}")
    print("check:", "exact" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
