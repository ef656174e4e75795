#!/usr/bin/env python3
"""Write tests/fixtures/models/tiny-pipe/: a tiny random SD1.x pipeline that the real CLIP tokenizer fits, + goldens of whole diffusers pipeline runs.

Versions used for the committed fixtures: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1,
transformers==5.24.0, safetensors==0.8.0 (same venv as models_golden.py).

  /work/pyenv/bin/python tools/golden/pipeline_golden.py           # (re)writes tiny-pipe/
  /work/pyenv/bin/python tools/golden/pipeline_golden.py --check   # reload with from_pretrained, recompute, compare

Deterministic: fixed seeds, one torch thread, deterministic algorithms; a rerun writes
byte-identical files (check with md5sum).

The folder is what `StableDiffusionPipeline.save_pretrained(dir, safe_serialization=True)` writes,
with tokenizer/ replaced by a plain copy of weights/clip_tokenizer/ and the text encoder keys
prefixed `text_model.` as the SD1.x checkpoints on the Hub have them (as tiny-sd1).

  text_encoder  CLIPTextModel with the FULL vocab (49408) but hidden 16, 2 layers, 2 heads,
                intermediate 37, quick_gelu, bos 49406 / eos 49407 / pad 49407, so the ids of
                the real tokenizer fit.
  unet          as tiny-sd1 (block_out_channels (16, 32), 1 layer per block, legacy
                attention_head_dim 2 = 2 heads, conv proj_in/proj_out), cross_attention_dim 16.
  vae           as tiny-sd1 ((8, 16), 4 groups, factor 2, scaling_factor 0.18215).
  scheduler     PNDMScheduler with SD1.5's scheduler_config.json (+ timestep_spacing "leading").

Every parameter is re-initialised with models_golden.reinit (weights N(0, 1/fan_in), biases
N(0, 0.1^2), norm weights 1 + 0.1 N, norm biases 0.1 N, embeddings N(0, 0.5^2)), built in f32,
rounded to f16, and saved as **float16**. Goldens are computed from the folder as
`StableDiffusionPipeline.from_pretrained` loads it, cast to float32 (exact for the f16 values).

Image 16 x 24 (H x W) -> latents (B, 4, 8, 12) (NCHW).

Goldens: golden_pipeline.safetensors (float32 unless stated, NCHW as diffusers has them)
  input_ids.prompt, input_ids.negative   (1, 77) int64, as the pipeline's tokenizer produced them
  prompt_embeds                          (2, 77, 16): CFG batch [negative, positive] (encode_prompt)
  latents                                (1, 4, 8, 12) = randn(seed 42): the `latents=` argument,
                                         BEFORE the pipeline multiplies it by init_noise_sigma
  image.<sched>                          (1, 16, 24, 3) in [0, 1]: pipe(..., output_type="np")
  final_latents.<sched>                  (1, 4, 8, 12): latents after the last scheduler step (the
                                         VAE decodes final_latents / scaling_factor)
  rng.<run>.<k>                          the k-th torch.randn draw from the pipeline's generator in
                                         that run (only runs that draw): for a torch-compatible RNG
  latents_batch2, image.ddim_batch2, final_latents.ddim_batch2   num_images_per_prompt=2, ddim
  init_image (16, 24, 3) uint8, image.img2img_ddim, final_latents.img2img_ddim,
  img2img.init_latents (scaling_factor * encoder sample), img2img.noised_latents (start latents)
golden_pipeline.json: versions, settings, per run the scheduler config, timesteps the UNet saw,
init_noise_sigma, generator draws (caller, shape) in order, image stats; every tensor's shape.
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
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models_golden import add_key_prefix, reinit, write_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "weights" / "clip_tokenizer"
DIR = ROOT / "tests" / "fixtures" / "models" / "tiny-pipe"
GOLDEN = "golden_pipeline.safetensors"
INFO = "golden_pipeline.json"

SEED = 3  # parameters: reinit seeds 301 (text encoder), 302 (unet), 303 (vae)
SEQ = 77

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json, timestep_spacing made explicit
SCHED_SD15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  num_train_timesteps=1000, prediction_type="epsilon", set_alpha_to_one=False,
                  skip_prk_steps=True, steps_offset=1, timestep_spacing="leading", trained_betas=None)

TEXT = dict(vocab_size=49408, hidden_size=16, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=SEQ, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
            pad_token_id=49407, projection_dim=16)
UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4, use_linear_projection=False)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
           norm_num_groups=4, sample_size=16, scaling_factor=0.18215,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)

PROMPT = "a red apple on a wooden table"
NEGATIVE = "blurry"
HEIGHT, WIDTH = 16, 24
LATENT_SHAPE = (1, 4, 8, 12)
PIPE_SEED = 1234
LATENT_SEED = 42
LATENT_SEED_BATCH2 = 43
IMG2IMG = dict(strength=0.6, steps=6, guidance=7.5, scheduler="ddim")

# name -> (class, from_config overrides, steps, guidance)
SCHEDULERS = {
    "ddim": (DDIMScheduler, {}, 6, 7.5),
    "pndm": (PNDMScheduler, {}, 6, 7.5),
    "euler": (EulerDiscreteScheduler, {}, 6, 7.5),
    "euler-a": (EulerAncestralDiscreteScheduler, {}, 6, 7.5),
    "dpmpp-2m": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2), 6, 7.5),
    "dpmpp-2m-karras": (DPMSolverMultistepScheduler,
                        dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True), 6, 7.5),
    "lcm": (LCMScheduler, {}, 4, 1.0),
}


# ----------------------------------------------------------------------------------------------
# build + write the model folder

def write_folder():
    if DIR.exists():
        shutil.rmtree(DIR)
    torch.manual_seed(SEED)  # constructors draw from the global RNG; reinit overwrites everything
    te = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
    unet = UNet2DConditionModel(**UNET).eval()
    vae = AutoencoderKL(**VAE).eval()
    reinit(te, SEED * 100 + 1)
    reinit(unet, SEED * 100 + 2)
    reinit(vae, SEED * 100 + 3)
    for m in (te, unet, vae):
        m.half()
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=CLIPTokenizer.from_pretrained(str(VOCAB)), unet=unet,
        scheduler=PNDMScheduler.from_config(SCHED_SD15),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(DIR), safe_serialization=True)
    write_tokenizer(DIR / "tokenizer", None)
    add_key_prefix(DIR / "text_encoder" / "model.safetensors", "text_model.")
    # f16 values as built, to compare with what from_pretrained gives back
    return {name: {k: v.float() for k, v in m.state_dict().items()} for name, m in
            (("text_encoder", te), ("unet", unet), ("vae", vae))}


def load_pipe():
    pipe = StableDiffusionPipeline.from_pretrained(str(DIR), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.text_encoder, pipe.unet, pipe.vae):
        m.eval()
        assert {p.dtype for p in m.parameters()} == {torch.float32}
    return pipe


def check_disk(pipe, built=None):
    """Weights on disk are f16 with the expected key names; reloaded values equal the built ones."""
    for sub, fname in (("text_encoder", "model.safetensors"), ("unet", "diffusion_pytorch_model.safetensors"),
                       ("vae", "diffusion_pytorch_model.safetensors")):
        sd = load_file(str(DIR / sub / fname))
        assert {v.dtype for v in sd.values()} == {torch.float16}, (sub, {v.dtype for v in sd.values()})
        if sub == "text_encoder":
            assert all(k.startswith("text_model.") for k in sd), sorted(sd)[:3]
            assert sd["text_model.embeddings.token_embedding.weight"].shape == (49408, 16)
        if built is not None:
            loaded = getattr(pipe, sub).state_dict()
            assert set(loaded) == set(built[sub]), (sub, set(loaded) ^ set(built[sub]))
            for k, v in built[sub].items():
                assert torch.equal(loaded[k], v), (sub, k)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (DIR / "tokenizer" / name).read_bytes() == (VOCAB / name).read_bytes(), name
    tok = pipe.tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)


# ----------------------------------------------------------------------------------------------
# generator-draw log: every diffusers module that imported randn_tensor gets a logging wrapper

DRAWS = []
_ORIG_RANDN = diffusers.utils.torch_utils.randn_tensor


def _logged_randn(shape, generator=None, *args, **kwargs):
    import inspect
    caller = inspect.stack()[1]
    out = _ORIG_RANDN(shape, generator=generator, *args, **kwargs)
    DRAWS.append(dict(caller=f"{Path(caller.filename).stem}.{caller.function}", shape=list(out.shape),
                      dtype=str(out.dtype).replace("torch.", ""), generator=generator is not None,
                      tensor=out.detach().clone()))
    return out


def patch_randn():
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("diffusers") and getattr(mod, "randn_tensor", None) is _ORIG_RANDN:
            mod.randn_tensor = _logged_randn


def take_draws(run, tensors):
    """Store this run's draws as rng.<run>.<k>, return their description; check they replay from the seed."""
    rows = []
    g = torch.Generator("cpu").manual_seed(PIPE_SEED)
    for k, d in enumerate(DRAWS):
        assert d["generator"] and d["dtype"] == "float32", d
        replay = torch.randn(d["shape"], generator=g, dtype=torch.float32)
        assert torch.equal(replay, d["tensor"]), (run, k)  # one generator, consecutive draws
        tensors[f"rng.{run}.{k}"] = d["tensor"]
        rows.append(dict(name=f"rng.{run}.{k}", caller=d["caller"], shape=d["shape"], dtype=d["dtype"]))
    DRAWS.clear()
    return rows


# ----------------------------------------------------------------------------------------------
# runs

class LastLatents:
    """callback_on_step_end: records the timesteps the UNet saw and the latents after the last step."""

    def __init__(self):
        self.timesteps = []
        self.latents = None

    def __call__(self, pipe, i, t, kw):
        self.timesteps.append(float(t))
        if i == pipe.num_timesteps - 1:
            self.latents = kw["latents"].detach().clone()
        return kw


def stats(img):
    return dict(std=float(img.std()), mean=float(img.mean()), min=float(img.min()), max=float(img.max()),
                frac_clamped=float(((img <= 0.0) | (img >= 1.0)).float().mean()))


def cfg_dict(cfg):
    """Scheduler config as JSON; `_use_default_values` (made from a set: unordered) written sorted."""
    return {k: (sorted(v) if k == "_use_default_values" else list(v) if isinstance(v, tuple) else v)
            for k, v in dict(cfg).items()}


def sched_info(s):
    return dict(cls=type(s).__name__, config=cfg_dict(s.config))


def f32(x):
    return float(torch.as_tensor(x, dtype=torch.float32))


def decode_check(pipe, final_latents, image):
    """image == postprocess(vae.decode(final / scaling_factor)): final_latents is what the VAE got."""
    dec = pipe.vae.decode(final_latents / pipe.vae.config.scaling_factor).sample
    again = torch.from_numpy(pipe.image_processor.postprocess(dec, output_type="np"))
    assert torch.equal(again, image)


def compute(pipe):
    t, info = {}, {}
    base_cfg = pipe.scheduler.config

    # text
    tok = pipe.tokenizer
    ids = {}
    for key, text in (("prompt", PROMPT), ("negative", NEGATIVE)):
        ids[key] = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                       return_tensors="pt").input_ids
        t[f"input_ids.{key}"] = ids[key]
    pos, neg = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
    t["prompt_embeds"] = torch.cat([neg, pos])
    # encode_prompt == last_hidden_state of the text encoder on those ids (no attention mask)
    for key, e in (("prompt", pos), ("negative", neg)):
        assert torch.equal(pipe.text_encoder(ids[key]).last_hidden_state, e), key

    lat = torch.randn(LATENT_SHAPE, generator=torch.Generator("cpu").manual_seed(LATENT_SEED))
    t["latents"] = lat

    # init_noise_sigma as prepare_latents reads it: AFTER set_timesteps (Euler's depends on the schedule)
    seen = {}
    orig_prepare_t2i = pipe.prepare_latents

    def prepare_t2i(*a, **k):
        seen["sigma"] = pipe.scheduler.init_noise_sigma
        seen["out"] = orig_prepare_t2i(*a, **k).detach().clone()
        return seen["out"]

    pipe.prepare_latents = prepare_t2i

    runs = {}
    for name, (cls, over, steps, guidance) in SCHEDULERS.items():
        pipe.scheduler = cls.from_config(base_cfg, **over)
        sigma_before = pipe.scheduler.init_noise_sigma
        cb = LastLatents()
        DRAWS.clear()
        img = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=guidance,
                   height=HEIGHT, width=WIDTH, latents=lat.clone(),
                   generator=torch.Generator("cpu").manual_seed(PIPE_SEED), output_type="np",
                   callback_on_step_end=cb).images
        img = torch.from_numpy(img)
        assert img.shape == (1, HEIGHT, WIDTH, 3) and img.dtype == torch.float32
        t[f"image.{name}"] = img
        t[f"final_latents.{name}"] = cb.latents
        decode_check(pipe, cb.latents, img)
        init_sigma = seen["sigma"]
        assert torch.equal(seen["out"], lat * init_sigma), name
        s = pipe.scheduler
        runs[name] = dict(
            scheduler=sched_info(s), overrides=over, num_inference_steps=steps, guidance_scale=guidance,
            cfg=guidance > 1.0,
            unet_timesteps=cb.timesteps, scheduler_timesteps=[float(x) for x in s.timesteps],
            sigmas=[float(x) for x in s.sigmas] if hasattr(s, "sigmas") else None,
            init_noise_sigma=f32(init_sigma),
            init_noise_sigma_type=type(init_sigma).__name__ + (f"[{init_sigma.dtype}]" if torch.is_tensor(init_sigma) else ""),
            init_noise_sigma_before_set_timesteps=f32(sigma_before),
            generator_draws=take_draws(name, t),
            image_stats=stats(img), final_latents_std=float(cb.latents.std()),
        )

    # batch 2: one prompt, num_images_per_prompt=2 -> CFG batch [neg, neg, pos, pos]
    lat2 = torch.randn((2,) + LATENT_SHAPE[1:], generator=torch.Generator("cpu").manual_seed(LATENT_SEED_BATCH2))
    t["latents_batch2"] = lat2
    pipe.scheduler = DDIMScheduler.from_config(base_cfg)
    cb = LastLatents()
    img = torch.from_numpy(pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=6, guidance_scale=7.5,
                                height=HEIGHT, width=WIDTH, latents=lat2.clone(), num_images_per_prompt=2,
                                generator=torch.Generator("cpu").manual_seed(PIPE_SEED), output_type="np",
                                callback_on_step_end=cb).images)
    assert img.shape == (2, HEIGHT, WIDTH, 3)
    t["image.ddim_batch2"] = img
    t["final_latents.ddim_batch2"] = cb.latents
    decode_check(pipe, cb.latents, img)
    runs["ddim_batch2"] = dict(scheduler=sched_info(pipe.scheduler), num_inference_steps=6, guidance_scale=7.5,
                               num_images_per_prompt=2, latents="latents_batch2 (randn seed 43)",
                               unet_timesteps=cb.timesteps, init_noise_sigma=f32(seen["sigma"]),
                               generator_draws=take_draws("ddim_batch2", t),
                               image_stats=[stats(img[0]), stats(img[1])], final_latents_std=float(cb.latents.std()))
    assert not torch.equal(img[0], img[1])

    # img2img
    init = init_image()
    t["init_image"] = torch.from_numpy(init)
    i2i = StableDiffusionImg2ImgPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                         unet=pipe.unet, scheduler=DDIMScheduler.from_config(base_cfg),
                                         safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    i2i.set_progress_bar_config(disable=True)
    pre = i2i.image_processor.preprocess(PIL.Image.fromarray(init))
    expect = torch.from_numpy(init).permute(2, 0, 1)[None].float() / 255.0 * 2.0 - 1.0
    assert torch.equal(pre, expect), (pre - expect).abs().max()  # image in [-1, 1] = u8 / 255 * 2 - 1
    captured = {}
    orig_prepare = i2i.prepare_latents

    def prepare(*a, **k):
        captured["noised"] = orig_prepare(*a, **k).detach().clone()
        captured["latent_timestep"] = a[1].clone()
        return captured["noised"]

    i2i.prepare_latents = prepare
    cb = LastLatents()
    DRAWS.clear()
    img = torch.from_numpy(i2i(PROMPT, image=PIL.Image.fromarray(init), strength=IMG2IMG["strength"],
                               negative_prompt=NEGATIVE, num_inference_steps=IMG2IMG["steps"],
                               guidance_scale=IMG2IMG["guidance"],
                               generator=torch.Generator("cpu").manual_seed(PIPE_SEED), output_type="np",
                               callback_on_step_end=cb).images)
    assert img.shape == (1, HEIGHT, WIDTH, 3)
    t["image.img2img_ddim"] = img
    t["final_latents.img2img_ddim"] = cb.latents
    decode_check(i2i, cb.latents, img)
    draws = take_draws("img2img_ddim", t)
    # reproduce the start latents from the logged draws: sf * (mean + std * eps0), then add_noise(eps1)
    dist = i2i.vae.encode(pre).latent_dist
    init_latents = i2i.vae.config.scaling_factor * (dist.mean + dist.std * t["rng.img2img_ddim.0"])
    noised = i2i.scheduler.add_noise(init_latents, t["rng.img2img_ddim.1"], captured["latent_timestep"])
    assert torch.equal(noised, captured["noised"])
    t["img2img.init_latents"] = init_latents
    t["img2img.noised_latents"] = captured["noised"]
    runs["img2img_ddim"] = dict(
        scheduler=sched_info(i2i.scheduler), num_inference_steps=IMG2IMG["steps"], strength=IMG2IMG["strength"],
        guidance_scale=IMG2IMG["guidance"],
        init_timestep=f"min(int({IMG2IMG['steps']} * {IMG2IMG['strength']}), {IMG2IMG['steps']}) = "
                      f"{min(int(IMG2IMG['steps'] * IMG2IMG['strength']), IMG2IMG['steps'])} (float product truncated)",
        latent_timestep=int(captured["latent_timestep"][0]),
        scheduler_timesteps_all=[float(x) for x in i2i.scheduler.timesteps], unet_timesteps=cb.timesteps,
        generator_draws=draws,
        latents_recipe="image = u8/255*2-1 (NCHW); moments = quant_conv(encoder(image)); mean, logvar = chunk(2, dim=1); "
                       "logvar = clamp(logvar, -30, 20); std = exp(0.5*logvar); "
                       "init_latents = scaling_factor * (mean + std * rng.img2img_ddim.0); "
                       "noised = sqrt(abar[t0]) * init_latents + sqrt(1-abar[t0]) * rng.img2img_ddim.1, t0 = latent_timestep; "
                       "NOT multiplied by init_noise_sigma",
        image_stats=stats(img), final_latents_std=float(cb.latents.std()),
    )

    t = {k: v.detach().contiguous() for k, v in t.items()}
    info = dict(
        generator="tools/golden/pipeline_golden.py",
        versions=dict(python=sys.version.split()[0], torch=torch.__version__, diffusers=diffusers.__version__,
                      transformers=transformers.__version__, safetensors=safetensors.__version__),
        weights_dtype_on_disk="float16",
        compute_dtype="float32 (f16 weights cast up exactly)",
        param_init="models_golden.reinit, seeds 301/302/303 (text encoder/unet/vae)",
        text_encoder=TEXT, text_encoder_key_prefix="text_model.",
        prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, latent_shape=list(LATENT_SHAPE),
        vae_scale_factor=pipe.vae_scale_factor, vae_scaling_factor=pipe.vae.config.scaling_factor,
        pipeline_generator=f"torch.Generator('cpu').manual_seed({PIPE_SEED}), fresh for every run",
        latents=f"torch.randn((1,4,8,12), generator=torch.Generator('cpu').manual_seed({LATENT_SEED}))",
        latents_note="pipeline.prepare_latents: latents = latents * scheduler.init_noise_sigma (also for given latents; "
                     "diffusers 0.42.1 pipeline_stable_diffusion.py prepare_latents), read AFTER set_timesteps: for "
                     "Euler/Euler-a (timestep_spacing leading) it is sqrt(max(sigmas)^2 + 1) over the N-step schedule "
                     "(f32 tensor math), not over the 1000 training sigmas (runs.*.init_noise_sigma_before_set_timesteps). "
                     "No generator draw for given latents.",
        cfg_note="noise = uncond + g * (text - uncond); UNet batch [neg, pos] (batch 2: [neg, neg, pos, pos]); "
                 "CFG off when guidance_scale <= 1 (then only the positive prompt is encoded)",
        prompt_embeds_note="tokenizer(padding='max_length', max_length=77, truncation=True); text_encoder(ids) "
                           "without attention mask; last_hidden_state (after final_layer_norm)",
        decode_note="image = clamp(vae.decode(final_latents / scaling_factor) / 2 + 0.5, 0, 1), NHWC",
        scheduler_base_config=cfg_dict(base_cfg),
        runs=runs,
        tensors={k: dict(shape=list(v.shape), dtype=str(v.dtype).replace("torch.", "")) for k, v in sorted(t.items())},
    )
    return t, info


def init_image():
    """A fixed 16 x 24 RGB u8 pattern: gradients plus a checker, every channel different."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    r = (x * 255 // (WIDTH - 1))
    g = (y * 255 // (HEIGHT - 1))
    b = np.where(((x // 4) + (y // 4)) % 2 == 0, 200, 40) + (x * y) % 17
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only reload and compare, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    patch_randn()

    built = None
    if not args.check:
        built = write_folder()
    pipe = load_pipe()
    check_disk(pipe, built)
    with torch.no_grad():
        tensors, info = compute(pipe)

    if not args.check:
        save_file(tensors, str(DIR / GOLDEN))
        (DIR / INFO).write_text(json.dumps(info, indent=2) + "\n")
        for name, r in info["runs"].items():
            st = r["image_stats"]
            for s in (st if isinstance(st, list) else [st]):
                assert s["std"] > 0.05 and s["frac_clamped"] < 0.5, (name, s)
        print(f"wrote {DIR}")

    ok = True
    gold = load_file(str(DIR / GOLDEN))
    if set(gold) != set(tensors):
        ok = False
        print("tensor names differ:", sorted(set(gold) ^ set(tensors)))
    for k in sorted(set(gold) & set(tensors)):
        if not (gold[k].dtype == tensors[k].dtype and torch.equal(gold[k], tensors[k])):
            ok = False
            d = (gold[k].double() - tensors[k].double()).abs().max().item() if gold[k].shape == tensors[k].shape else None
            print(f"MISMATCH {k}: max abs {d}")
    stored = json.loads((DIR / INFO).read_text())
    now = json.loads(json.dumps(info))
    if stored != now:
        ok = False
        for k in sorted(set(stored) | set(now)):
            if stored.get(k) != now.get(k):
                print(f"MISMATCH json key {k}")
    for name, r in info["runs"].items():
        st = r["image_stats"]
        st = st if isinstance(st, list) else [st]
        print(f"{name:16s} init_noise_sigma {r.get('init_noise_sigma', '-')!s:>10.8} unet t {r['unet_timesteps']} "
              f"draws {[d['shape'] for d in r['generator_draws']]} image std {[round(s['std'], 4) for s in st]} "
              f"clamped {[round(s['frac_clamped'], 3) for s in st]}")
    print("check:", "exact" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
