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

DERIVED cases start instead from a hub scheduler_config.json text (stored verbatim as
`derive.source_text`) and switch scheduler as a diffusers user does; see DERIVED below.

Stored per case: timesteps, sigmas (where the scheduler has them), alphas_cumprod at each
timestep (DDPM-family), init_noise_sigma, add_noise at step 1 (0 for one-step runs), and per step: the scaled model
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


# Hub scheduler files and the schedulers derived from them the way a diffusers user switches
# schedulers on a loaded pipeline: `Target.from_config(pipe.scheduler.config, **overrides)`,
# where `pipe.scheduler` was loaded from the file (`Source.from_config(json.loads(text))`).
# The file text is stored verbatim (`source_text`); stipple reads it with
# `SchedulerConfig::from_file`, then `with_name(name)` and `with_overrides(...)`.

# stabilityai/sd-turbo scheduler/scheduler_config.json (as published).
SD_TURBO = {
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.24.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "timestep_spacing": "trailing", "timestep_type": "discrete", "trained_betas": None,
    "use_karras_sigmas": False,
}


def hub_text(cls, config):
    """A scheduler_config.json as a hub folder holds it: SD1.5's file as published (PNDM), or what
    `save_config` writes for a class (every field, Python json's -Infinity included)."""
    if cls is None:
        return json.dumps(config, indent=2, sort_keys=True) + "\n"
    return cls.from_config(config).to_json_string()


SD15_FILE = hub_text(None, {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", **SD15})
DPM_KARRAS_FILE = hub_text(DPMSolverMultistepScheduler, {**SD15, "use_karras_sigmas": True})
DDIM_VPRED_FILE = hub_text(DDIMScheduler, {**SD15, "prediction_type": "v_prediction", "timestep_spacing": "leading"})
TURBO_FILE = hub_text(None, SD_TURBO)
DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}

# (file stem, source text, target class, diffusers overrides, steps,
#  stipple: (scheduler name, {prediction_type, timestep_spacing, karras}))
DERIVED = [
    ("derive_euler_a_trailing_from_pndm_1", SD15_FILE, EulerAncestralDiscreteScheduler,
     {"timestep_spacing": "trailing"}, 1, ("euler-a", {"timestep_spacing": "trailing"})),
    ("derive_euler_a_trailing_from_pndm_4", SD15_FILE, EulerAncestralDiscreteScheduler,
     {"timestep_spacing": "trailing"}, 4, ("euler-a", {"timestep_spacing": "trailing"})),
    ("derive_euler_a_from_turbo_4", TURBO_FILE, EulerAncestralDiscreteScheduler, {}, 4, ("euler-a", {})),
    ("derive_ddim_from_turbo_2", TURBO_FILE, DDIMScheduler, {}, 2, ("ddim", {})),
    ("derive_euler_from_dpm_karras_file", DPM_KARRAS_FILE, EulerDiscreteScheduler, {}, 5, ("euler", {})),
    ("derive_dpmpp_karras_from_ddim_vpred", DDIM_VPRED_FILE, DPMSolverMultistepScheduler,
     {**DPMPP_2M, "use_karras_sigmas": True}, 6, ("dpmpp-2m", {"karras": True})),
    ("derive_euler_vpred_linspace_from_pndm", SD15_FILE, EulerDiscreteScheduler,
     {"prediction_type": "v_prediction", "timestep_spacing": "linspace"}, 5,
     ("euler", {"prediction_type": "v_prediction", "timestep_spacing": "linspace"})),
    ("derive_pndm_trailing_from_dpm_karras_file", DPM_KARRAS_FILE, PNDMScheduler,
     {"timestep_spacing": "trailing"}, 5, ("pndm", {"timestep_spacing": "trailing"})),
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


def run_case(stem, cls, config, steps, step_kwargs, make=None):
    """`make()` builds the scheduler (default: `cls.from_config(config)`)."""
    make = make or (lambda: cls.from_config(config))
    scheduler = make()
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
    fresh = make()
    fresh.set_timesteps(steps)
    k = min(1, steps - 1)
    t1 = fresh.timesteps[k:k + 1]
    doc["add_noise"] = {
        "step_index": k,
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


def derived_case(stem, source_text, cls, overrides, steps, stipple):
    source = json.loads(source_text)  # Python json reads -Infinity as float("-inf")
    source_cls = getattr(diffusers, source["_class_name"])
    loaded = source_cls.from_config(source)  # what from_pretrained gives
    make = lambda: cls.from_config(loaded.config, **overrides)  # noqa: E731
    doc = run_case(stem, cls, {}, steps, {}, make=make)
    name, stipple_overrides = stipple
    doc["config"] = {}
    doc["derive"] = {
        "source_text": source_text,
        "diffusers": f"{cls.__name__}.from_config({source_cls.__name__}.from_config(source).config, **{overrides})",
        "name": name,
        **stipple_overrides,
    }
    return doc


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    docs = [(stem, cls, run_case(stem, cls, config, steps, step_kwargs))
            for stem, cls, config, steps, step_kwargs in CASES]
    docs += [(case[0], case[2], derived_case(*case)) for case in DERIVED]
    for stem, cls, doc in docs:
        path = OUT / f"{stem}.json"
        path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"{path.name}: {cls.__name__}, {len(doc['steps'])} steps, timesteps {doc['timesteps']}")


if __name__ == "__main__":
    main()
