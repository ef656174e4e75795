#!/usr/bin/env python3
"""Write tests/fixtures/schedulers/*.json: diffusers scheduler runs on small fixed tensors.

Versions used for the committed fixtures: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1,
numpy==2.4.6.

  python3 -m venv /work/pyenv && /work/pyenv/bin/pip install torch==2.15.0 diffusers==0.42.1 numpy
  /work/pyenv/bin/python tools/golden/scheduler_golden.py

Each case builds `<Class>.from_config(config)` (fields not in `config` take that class's own
defaults, as when diffusers swaps schedulers on a pipeline), calls `set_timesteps(n)` and runs
every timestep like a pipeline does: `scale_model_input`, then `step` with a stored model output.
Noise the schedulers would draw (Euler ancestral, LCM, DDIM with eta > 0) is drawn here, stored,
and passed in, so the Rust side needs no torch RNG. Tensors are (2, 4, 3, 3) float32, stored
flattened in NCHW order (the schedulers are elementwise, so layout does not matter).

Stored per case: timesteps, sigmas (where the scheduler has them), alphas_cumprod at each
timestep (DDPM-family), init_noise_sigma, add_noise at step 1, and per step: the scaled model
input, model output, noise (if any) and prev_sample.
"""

import json
from pathlib import Path

import numpy as np
import torch
import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
)
import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_a_module
import diffusers.schedulers.scheduling_lcm as lcm_module

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "schedulers"
SHAPE = (2, 4, 3, 3)

# The SD1.5 scheduler_config.json (runwayml/stable-diffusion-v1-5/scheduler).
SD15 = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# (file stem, class, config, num_inference_steps, extra step kwargs)
CASES = [
    ("ddim_sd15", DDIMScheduler, SD15, 5, {}),
    ("ddim_trailing_vpred_clip", DDIMScheduler,
     {**SD15, "timestep_spacing": "trailing", "prediction_type": "v_prediction", "clip_sample": True,
      "rescale_betas_zero_snr": True, "set_alpha_to_one": True}, 5, {}),
    ("ddim_defaults_linspace_eta", DDIMScheduler, {"timestep_spacing": "linspace"}, 4, {"eta": 0.5}),
    ("pndm_sd15", PNDMScheduler, SD15, 5, {}),
    ("pndm_prk", PNDMScheduler, {**SD15, "skip_prk_steps": False}, 5, {}),
    ("euler_sd15", EulerDiscreteScheduler, SD15, 5, {}),
    ("euler_leading_vpred", EulerDiscreteScheduler,
     {**SD15, "timestep_spacing": "leading", "prediction_type": "v_prediction"}, 5, {}),
    ("euler_karras_trailing", EulerDiscreteScheduler,
     {**SD15, "use_karras_sigmas": True, "timestep_spacing": "trailing"}, 5, {}),
    ("euler_cosine_sample", EulerDiscreteScheduler,
     {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample", "final_sigmas_type": "sigma_min"}, 4, {}),
    ("euler_ancestral_sd15", EulerAncestralDiscreteScheduler, SD15, 5, {}),
    ("euler_ancestral_leading_vpred", EulerAncestralDiscreteScheduler,
     {**SD15, "timestep_spacing": "leading", "prediction_type": "v_prediction"}, 4, {}),
    ("dpmpp_2m_sd15", DPMSolverMultistepScheduler, SD15, 5, {}),
    ("dpmpp_2m_karras_sd15", DPMSolverMultistepScheduler, {**SD15, "use_karras_sigmas": True}, 6, {}),
    ("dpmpp_2m_vpred_trailing_sigma_min", DPMSolverMultistepScheduler,
     {**SD15, "prediction_type": "v_prediction", "timestep_spacing": "trailing",
      "final_sigmas_type": "sigma_min", "lower_order_final": False}, 5, {}),
    ("dpmpp_2m_leading_16", DPMSolverMultistepScheduler, {**SD15, "timestep_spacing": "leading"}, 16, {}),
    ("lcm_defaults", LCMScheduler, {}, 4, {}),
    ("lcm_sd15_clip", LCMScheduler, {**SD15, "clip_sample": True, "timestep_spacing": "trailing"}, 6, {}),
]


def f32_list(t):
    """float32 values as the shortest decimals that round-trip through f32."""
    return [float(str(v)) for v in np.asarray(t, dtype=np.float32).reshape(-1)]


class NoiseFeed:
    """Stands in for diffusers' randn_tensor: hands out pre-drawn noise and records it."""

    def __init__(self, generator):
        self.generator = generator
        self.drawn = []

    def __call__(self, shape, generator=None, device=None, dtype=None, **kwargs):
        noise = torch.randn(shape, generator=self.generator, dtype=torch.float32)
        self.drawn.append(noise.clone())
        return noise.to(dtype or torch.float32)


def run_case(stem, cls, config, steps, step_kwargs):
    scheduler = cls.from_config(config)
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(sum(map(ord, stem)))
    feed = NoiseFeed(gen)
    euler_a_module.randn_tensor = feed
    lcm_module.randn_tensor = feed

    init_noise_sigma = float(scheduler.init_noise_sigma)
    latents = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
    sample = latents * scheduler.init_noise_sigma

    doc = {
        "generator": f"tools/golden/scheduler_golden.py (diffusers {diffusers.__version__}, torch {torch.__version__})",
        "class_name": cls.__name__,
        "config": config,
        "num_inference_steps": steps,
        "eta": step_kwargs.get("eta", 0.0),
        "timesteps": [float(t) for t in scheduler.timesteps],
        "init_noise_sigma": init_noise_sigma,
        "shape": list(SHAPE),
        "initial_sample": f32_list(sample),
    }
    if hasattr(scheduler, "sigmas"):
        doc["sigmas"] = f32_list(scheduler.sigmas)
    if cls in (DDIMScheduler, PNDMScheduler, LCMScheduler):
        doc["alphas_cumprod"] = f32_list(scheduler.alphas_cumprod[scheduler.timesteps.long()])
        doc["final_alpha_cumprod"] = float(scheduler.final_alpha_cumprod)

    # img2img: noise the initial latents to the second timestep. Euler-style schedulers look
    # the timestep up in their schedule; give them a fresh copy so the run below starts clean.
    noise = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
    fresh = cls.from_config(config)
    fresh.set_timesteps(steps)
    t1 = fresh.timesteps[1:2]
    doc["add_noise"] = {
        "step_index": 1,
        "original": f32_list(latents),
        "noise": f32_list(noise),
        "result": f32_list(fresh.add_noise(latents, noise, t1)),
    }

    records = []
    for i, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(sample, t)
        # A stand-in "UNet": a fixed random prediction plus a little of the input, so each
        # step's output depends on the running sample as a real model's would.
        model_output = torch.randn(SHAPE, generator=gen, dtype=torch.float32) + 0.1 * model_input
        kwargs = dict(step_kwargs)
        noise = None
        if kwargs.get("eta", 0.0) > 0:
            noise = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
            kwargs["variance_noise"] = noise
        n_before = len(feed.drawn)
        prev = scheduler.step(model_output, t, sample, **kwargs).prev_sample
        if len(feed.drawn) > n_before:
            noise = feed.drawn[-1]
        records.append({
            "step_index": i,
            "timestep": float(t),
            "model_input": f32_list(model_input),
            "model_output": f32_list(model_output),
            "noise": f32_list(noise) if noise is not None else None,
            "prev_sample": f32_list(prev),
        })
        sample = prev
    doc["steps"] = records
    return doc


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for stem, cls, config, steps, step_kwargs in CASES:
        doc = run_case(stem, cls, config, steps, step_kwargs)
        path = OUT / f"{stem}.json"
        path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"{path.name}: {cls.__name__}, {len(doc['steps'])} steps, timesteps {doc['timesteps']}")


if __name__ == "__main__":
    main()
