#!/usr/bin/env python3
"""Write tests/fixtures/lora/: tiny LoRA files for the tiny-pipe model (kohya, diffusers/PEFT, the
older diffusers attention-processor form) and goldens of diffusers' `load_lora_weights` +
`fuse_lora(lora_scale=…)` whole-pipeline images from fixed latents.

Versions used for the committed fixtures: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1,
transformers==5.24.0, safetensors==0.8.0, peft==0.21.2 (diffusers' LoRA loading needs peft).

  python3 tools/golden/lora_golden.py           # (re)writes tests/fixtures/lora/
  python3 tools/golden/lora_golden.py --check   # recompute and compare with the committed goldens

Deterministic: fixed seeds, one torch thread; a rerun writes byte-identical files (md5sum).

Model: tests/fixtures/models/tiny-pipe (pipeline_golden.py), loaded by
StableDiffusionPipeline.from_pretrained in float32. Run: prompt "a red apple on a wooden table",
negative "blurry", DDIM 6 steps, guidance 7.5, 16 x 24 (H x W), latents randn(seed 42)
(1, 4, 8, 12) passed as `latents=`.

LoRA files (down = N(0, 1/fan_in), up = N(0, 1/rank): deltas as large as the weights, so every
module visibly changes the image):
  kohya_sd1.safetensors     float16. lora_unet_/lora_te_ keys, .lora_down/.lora_up/.alpha,
                            alpha != rank, ranks 2-4 (scales alpha/rank 1, 2/3, 1/2, 1/3; one
                            alpha per component: diffusers 0.42 + peft 0.21 ignore a per-module
                            alpha_pattern and fuse every module with the most common alpha,
                            while kohya/A1111 use each module's own alpha). UNet: self-attention q/k/v/out (q, k, v are fused into
                            one GPU weight by stipple), cross-attention k/v, GEGLU proj and ff out,
                            proj_in (1x1 conv), LoCon: resnet conv1 (3x3), conv_shortcut (1x1),
                            downsampler conv, time_emb_proj, conv_in. Text encoder: mlp.fc1,
                            mlp.fc2. (Not the CLIP attention projections: with transformers 5
                            diffusers 0.42 drops kohya's lora_te_…_self_attn_q_proj keys as
                            "unexpected"; the PEFT file covers them.)
  peft_sd1.safetensors      float32. unet./text_encoder. prefixes, lora_A/lora_B, no alpha
                            (scale 1): attn1.to_q/to_v, attn2.to_k/to_out.0, resnet conv2 (3x3),
                            proj_out (1x1 conv), CLIP self_attn q_proj/v_proj and mlp.fc2; ranks
                            differ per module.
  peft_meta_sd1.safetensors float32 PEFT keys + the `lora_adapter_metadata` diffusers'
                            save_lora_weights writes (unet: r 2, lora_alpha 4, alpha_pattern
                            {"attn1.to_v": 1}; text encoder: r 3, lora_alpha 6).
  diffusers_old_sd1.safetensors  float32. `unet.….processor.to_q_lora.down.weight` form.
  kohya_unmatched.safetensors    one module that exists and one (down_blocks_7_…) that does not.
  kohya_sdxl_names.safetensors   keys in SDXL's LDM naming (`input_blocks_1_1_…`): tiny-pipe
                                 numbering, resolved the same way SDXL files are.

Goldens: golden_lora.safetensors (float32, NCHW / NHWC as noted)
  latents                   (1, 4, 8, 12) the `latents=` argument
  image.base                (1, 16, 24, 3) without LoRA
  image.kohya_0.8           kohya at lora_scale 0.8
  image.kohya_0.3           kohya at 0.3
  image.kohya_unet_0.8      the lora_unet_ keys of kohya_sd1 only, at 0.8 (shows the text
                            encoder part matters; not compared by the tests)
  image.peft_1.0            PEFT at 1.0
  image.old_1.0             old attention-processor file at 1.0
  image.peft_meta_0.7       peft_meta_sd1 at 0.7
  image.kohya_0.8+peft_0.6  both: set_adapters([k, p], [0.8, 0.6]) then fuse_lora(lora_scale=1)
  image.sdxl_names_1.0      kohya_sdxl_names at 1.0 (diffusers loads it as the same modules
                            written with diffusers names; the script checks the weights agree)
golden_lora.json: versions, settings, the modules each file changed (as diffusers fused them),
max |image - image.base| per run.

Before writing, the script checks for every run that diffusers' fused weights equal
W + Σ multiplier·alpha/rank·up·down (computed here by hand, max abs error < 1e-5) and that every
LoRA module of the file changed its weight: the goldens are diffusers' numbers for that formula.
"""

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import diffusers
import peft
import safetensors
import transformers
from diffusers import DDIMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests" / "fixtures" / "models" / "tiny-pipe"
OUT = ROOT / "tests" / "fixtures" / "lora"
GOLDEN = "golden_lora.safetensors"
INFO = "golden_lora.json"
NOT_WRITTEN = {"kohya_sd1_unet"}

PROMPT = "a red apple on a wooden table"
NEGATIVE = "blurry"
HEIGHT, WIDTH = 16, 24
LATENT_SHAPE = (1, 4, 8, 12)
LATENT_SEED = 42
STEPS, GUIDANCE = 6, 7.5

ATTN = "down_blocks.0.attentions.0.transformer_blocks.0"
MID = "mid_block.attentions.0.transformer_blocks.0"
UP = "up_blocks.1.attentions.1.transformer_blocks.0"

# (component, diffusers module, rank, alpha)
KOHYA = [
    ("unet", f"{ATTN}.attn1.to_q", 4, 2.0),
    ("unet", f"{ATTN}.attn1.to_k", 2, 2.0),
    ("unet", f"{ATTN}.attn1.to_v", 2, 2.0),
    ("unet", f"{ATTN}.attn1.to_out.0", 3, 2.0),
    ("unet", f"{MID}.attn2.to_k", 2, 2.0),
    ("unet", f"{MID}.attn2.to_v", 4, 2.0),
    ("unet", f"{UP}.ff.net.0.proj", 3, 2.0),
    ("unet", f"{MID}.ff.net.2", 2, 2.0),
    ("unet", "down_blocks.0.attentions.0.proj_in", 2, 2.0),
    ("unet", "down_blocks.0.resnets.0.conv1", 4, 2.0),
    ("unet", "up_blocks.0.resnets.1.conv_shortcut", 2, 2.0),
    ("unet", "down_blocks.0.downsamplers.0.conv", 3, 2.0),
    ("unet", "down_blocks.1.resnets.0.time_emb_proj", 2, 2.0),
    ("unet", "conv_in", 2, 2.0),
    ("text_encoder", "text_model.encoder.layers.0.mlp.fc1", 2, 1.0),
    ("text_encoder", "text_model.encoder.layers.1.mlp.fc2", 3, 1.0),
]
# (component, module, rank)
PEFT = [
    ("unet", f"{ATTN}.attn1.to_q", 3),
    ("unet", f"{ATTN}.attn1.to_v", 2),
    ("unet", f"{UP}.attn2.to_k", 2),
    ("unet", f"{UP}.attn2.to_out.0", 4),
    ("unet", "down_blocks.1.resnets.0.conv2", 3),
    ("unet", "up_blocks.1.attentions.0.proj_out", 2),
    ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj", 2),
    ("text_encoder", "text_model.encoder.layers.1.self_attn.v_proj", 3),
    ("text_encoder", "text_model.encoder.layers.0.mlp.fc2", 2),
]
# PEFT with diffusers' lora_adapter_metadata (LoraConfig per component): alpha != rank,
# an alpha_pattern entry
PEFT_META = [
    ("unet", f"{ATTN}.attn1.to_q"),
    ("unet", f"{ATTN}.attn1.to_v"),
    ("unet", "down_blocks.1.resnets.0.conv1"),
    ("text_encoder", "text_model.encoder.layers.0.self_attn.k_proj"),
    ("text_encoder", "text_model.encoder.layers.1.mlp.fc1"),
]
ADAPTER_METADATA = {
    "unet": dict(r=2, lora_alpha=4, alpha_pattern={"attn1.to_v": 1},
                 target_modules=sorted(m for c, m in PEFT_META if c == "unet")),
    "text_encoder": dict(r=3, lora_alpha=6,
                         target_modules=sorted(m.removeprefix("text_model.") for c, m in PEFT_META
                                               if c == "text_encoder")),
}
FILE_METADATA = {
    "peft_meta_sd1": {"format": "pt", "lora_adapter_metadata": json.dumps(
        {f"{c}.{k}": v for c, cfg in ADAPTER_METADATA.items() for k, v in cfg.items()},
        indent=2, sort_keys=True)},
}

# (attention module, processor names)
OLD = [
    (f"{ATTN}.attn1", ["to_q", "to_out"]),
    ("up_blocks.1.attentions.0.transformer_blocks.0.attn2", ["to_k", "to_v"]),
]
OLD_MODULE = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
# tiny-pipe (1 resnet per block; up block 0 without attention) in LDM naming
SDXL_NAMES = [
    ("input_blocks.1.1.transformer_blocks.0.attn1.to_q", f"{ATTN}.attn1.to_q"),
    ("input_blocks.1.0.in_layers.2", "down_blocks.0.resnets.0.conv1"),
    ("middle_block.1.transformer_blocks.0.attn2.to_out.0", f"{MID}.attn2.to_out.0"),
    ("output_blocks.3.1.proj_out", "up_blocks.1.attentions.1.proj_out"),
    ("output_blocks.1.1.conv", "up_blocks.0.upsamplers.0.conv"),
]


def load_pipe():
    pipe = StableDiffusionPipeline.from_pretrained(str(MODEL), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, dtype=torch.float32)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def weight_of(pipe, component, module):
    sd = getattr(pipe, component).state_dict()
    key = module + ".weight"
    if component == "text_encoder" and key not in sd:
        key = key.removeprefix("text_model.")  # transformers 5 CLIPTextModel has no text_model.
    return sd[key].clone()


def low_rank(g, shape, rank):
    """down (rank, in, [kh, kw]) ~ N(0, 1/fan_in), up (out, rank, [1, 1]) ~ N(0, 1/rank)."""
    rest = tuple(shape[1:])
    fan_in = int(np.prod(rest))
    down = torch.randn((rank,) + rest, generator=g) / fan_in ** 0.5
    up = torch.randn((shape[0], rank) + ((1, 1) if len(rest) == 3 else ()), generator=g) / rank ** 0.5
    return down, up


def delta(down, up, scale):
    d = up.reshape(up.shape[0], -1).double() @ down.reshape(down.shape[0], -1).double()
    return (scale * d).float()


def kohya_key(component, module):
    return {"unet": "lora_unet_", "text_encoder": "lora_te_"}[component] + module.replace(".", "_")


def build_files(pipe):
    """name -> (tensors, {(component, module): (down, up, alpha or None)})."""
    g = torch.Generator().manual_seed(11)
    files = {}

    tensors, mods = {}, {}
    for comp, m, r, alpha in KOHYA:
        down, up = low_rank(g, weight_of(pipe, comp, m).shape, r)
        down, up = down.half(), up.half()
        k = kohya_key(comp, m)
        tensors[k + ".lora_down.weight"] = down
        tensors[k + ".lora_up.weight"] = up
        tensors[k + ".alpha"] = torch.tensor(alpha, dtype=torch.float16)
        mods[(comp, m)] = (down.float(), up.float(), alpha)
    files["kohya_sd1"] = (tensors, mods)
    # its UNet half (not written: only to show the text encoder half matters)
    files["kohya_sd1_unet"] = ({k: v for k, v in tensors.items() if k.startswith("lora_unet_")},
                               {k: v for k, v in mods.items() if k[0] == "unet"})

    tensors, mods = {}, {}
    for comp, m, r in PEFT:
        down, up = low_rank(g, weight_of(pipe, comp, m).shape, r)
        tensors[f"{comp}.{m}.lora_A.weight"] = down
        tensors[f"{comp}.{m}.lora_B.weight"] = up
        mods[(comp, m)] = (down, up, None)
    files["peft_sd1"] = (tensors, mods)

    tensors, mods = {}, {}
    for comp, m in PEFT_META:
        cfg = ADAPTER_METADATA[comp]
        down, up = low_rank(g, weight_of(pipe, comp, m).shape, cfg["r"])
        tensors[f"{comp}.{m}.lora_A.weight"] = down
        tensors[f"{comp}.{m}.lora_B.weight"] = up
        alpha = next((a for k, a in cfg.get("alpha_pattern", {}).items() if m.endswith("." + k)), cfg["lora_alpha"])
        mods[(comp, m)] = (down, up, float(alpha))
    files["peft_meta_sd1"] = (tensors, mods)

    tensors, mods = {}, {}
    for attn, procs in OLD:
        for p in procs:
            m = f"{attn}.{OLD_MODULE[p]}"
            down, up = low_rank(g, weight_of(pipe, "unet", m).shape, 2)
            tensors[f"unet.{attn}.processor.{p}_lora.down.weight"] = down
            tensors[f"unet.{attn}.processor.{p}_lora.up.weight"] = up
            mods[("unet", m)] = (down, up, None)
    files["diffusers_old_sd1"] = (tensors, mods)

    tensors, mods = {}, {}
    for ldm, m in SDXL_NAMES:
        down, up = low_rank(g, weight_of(pipe, "unet", m).shape, 2)
        k = "lora_unet_" + ldm.replace(".", "_")
        tensors[k + ".lora_down.weight"] = down
        tensors[k + ".lora_up.weight"] = up
        tensors[k + ".alpha"] = torch.tensor(1.0)
        mods[("unet", m)] = (down, up, 1.0)
    files["kohya_sdxl_names"] = (tensors, mods)

    tensors = {}
    for m in [f"{ATTN}.attn1.to_q", "down_blocks.7.attentions.0.proj_in"]:
        k = kohya_key("unet", m)
        tensors[k + ".lora_down.weight"] = torch.zeros(2, 16)
        tensors[k + ".lora_up.weight"] = torch.zeros(16, 2)
    files["kohya_unmatched"] = (tensors, {})
    return files


def diffusers_equivalent(tensors, mods, name):
    """What diffusers is given: the file itself, except SDXL LDM names on this SD1-sized model
    (diffusers maps them with SDXL's block counts), given in diffusers' naming instead."""
    if name != "kohya_sdxl_names":
        return tensors
    out = {}
    for (comp, m), (down, up, alpha) in mods.items():
        k = kohya_key(comp, m)
        out[k + ".lora_down.weight"], out[k + ".lora_up.weight"] = down, up
        out[k + ".alpha"] = torch.tensor(alpha)
    return out


def expected_weights(base, runs):
    """base {(comp, module): W}; runs [(mods, multiplier)] -> W + Σ mult·alpha/rank·up·down."""
    want = {k: v.clone() for k, v in base.items()}
    for mods, mult in runs:
        for key, (down, up, alpha) in mods.items():
            scale = mult * (alpha / down.shape[0] if alpha is not None else 1.0)
            want[key] = want[key] + delta(down, up, scale).reshape(want[key].shape)
    return want


def run_image(pipe, latents):
    out = pipe(PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
               guidance_scale=GUIDANCE, latents=latents.clone(), output_type="np")
    return torch.from_numpy(np.asarray(out.images)).float()


def fused(pipe, keys):
    return {(c, m): weight_of_fused(pipe, c, m) for c, m in keys}


def weight_of_fused(pipe, component, module):
    sd = getattr(pipe, component).state_dict()
    for key in (module + ".weight", module + ".base_layer.weight"):
        for k in (key, key.removeprefix("text_model.")):
            if k in sd:
                return sd[k].clone()
    raise KeyError(module)


def compute():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    pipe = load_pipe()
    files = build_files(pipe)
    latents = torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(LATENT_SEED))
    goldens = {"latents": latents, "image.base": run_image(pipe, latents)}
    all_keys = sorted({k for _, mods in files.values() for k in mods})
    base = {k: weight_of(pipe, *k) for k in all_keys}
    info = {"runs": {}, "files": {}}

    # name -> [(file, multiplier)], fuse_lora components
    runs = {
        "kohya_0.8": ([("kohya_sd1", 0.8)], ["unet", "text_encoder"]),
        "kohya_0.3": ([("kohya_sd1", 0.3)], ["unet", "text_encoder"]),
        "kohya_unet_0.8": ([("kohya_sd1_unet", 0.8)], ["unet", "text_encoder"]),
        "peft_1.0": ([("peft_sd1", 1.0)], ["unet", "text_encoder"]),
        "old_1.0": ([("diffusers_old_sd1", 1.0)], ["unet", "text_encoder"]),
        "peft_meta_0.7": ([("peft_meta_sd1", 0.7)], ["unet", "text_encoder"]),
        "kohya_0.8+peft_0.6": ([("kohya_sd1", 0.8), ("peft_sd1", 0.6)], ["unet", "text_encoder"]),
        "sdxl_names_1.0": ([("kohya_sdxl_names", 1.0)], ["unet", "text_encoder"]),
    }
    for run, (loras, components) in runs.items():
        pipe = load_pipe()  # fresh: unfuse_lora subtracts the delta again, not bit-exact
        names = []
        for i, (fname, mult) in enumerate(loras):
            tensors, mods = files[fname]
            adapter = f"a{i}"
            if fname in FILE_METADATA:  # diffusers reads the metadata from a file only
                tmp = Path(tempfile.mkdtemp()) / f"{fname}.safetensors"
                save_file(tensors, str(tmp), metadata=FILE_METADATA[fname])
                pipe.load_lora_weights(str(tmp), adapter_name=adapter)
            else:
                pipe.load_lora_weights(diffusers_equivalent(tensors, mods, fname), adapter_name=adapter)
            names.append(adapter)
        if len(loras) == 1:
            pipe.fuse_lora(lora_scale=loras[0][1], components=components)
        else:
            pipe.set_adapters(names, adapter_weights=[m for _, m in loras])
            pipe.fuse_lora(lora_scale=1.0, components=components, adapter_names=names)
        # self-check: diffusers' fused weights = the formula, every module changed
        mods_runs = [(({k: v for k, v in files[f][1].items() if k[0] in components}), m) for f, m in loras]
        want = expected_weights(base, mods_runs)
        got = fused(pipe, all_keys)
        for k in all_keys:
            err = (got[k] - want[k]).abs().max().item()
            assert err < 1e-5, (run, k, err)
            touched = any(k in mods for mods, _ in mods_runs)
            assert touched == (not torch.equal(got[k], base[k])), (run, k, "changed" if touched else "unchanged")
        goldens[f"image.{run}"] = run_image(pipe, latents)
        diff = (goldens[f"image.{run}"] - goldens["image.base"]).abs().max().item()
        info["runs"][run] = dict(loras=loras, components=components, max_abs_diff_from_base=diff)
        assert diff > 1e-2, (run, diff)
    d = (goldens["image.kohya_0.8"] - goldens["image.kohya_unet_0.8"]).abs().max().item()
    info["kohya_text_encoder_effect"] = d
    assert d > 1e-3, d
    for fname, (tensors, mods) in files.items():
        info["files"][fname] = dict(keys=len(tensors), modules=[f"{c}:{m}" for c, m in sorted(mods)])
    info["versions"] = dict(torch=torch.__version__, diffusers=diffusers.__version__,
                            transformers=transformers.__version__, peft=peft.__version__,
                            safetensors=safetensors.__version__)
    info["settings"] = dict(prompt=PROMPT, negative=NEGATIVE, height=HEIGHT, width=WIDTH, steps=STEPS,
                            guidance=GUIDANCE, scheduler="DDIMScheduler", latent_seed=LATENT_SEED)
    return files, goldens, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    files, goldens, info = compute()
    goldens = {k: v.contiguous() for k, v in goldens.items()}
    if args.check:
        old = load_file(str(OUT / GOLDEN))
        assert set(old) == set(goldens), set(old) ^ set(goldens)
        for k, v in goldens.items():
            assert torch.equal(old[k], v), k
        for fname, (tensors, _) in files.items():
            if fname in NOT_WRITTEN:
                continue
            got = load_file(str(OUT / f"{fname}.safetensors"))
            assert set(got) == set(tensors) and all(torch.equal(got[k], tensors[k]) for k in tensors), fname
        print("goldens match")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for fname, (tensors, _) in files.items():
        if fname in NOT_WRITTEN:
            continue
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / f"{fname}.safetensors"),
                  metadata=FILE_METADATA.get(fname))
    save_file(goldens, str(OUT / GOLDEN))
    (OUT / INFO).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    for p in sorted(OUT.iterdir()):
        print(p.name, p.stat().st_size, hashlib.md5(p.read_bytes()).hexdigest())


if __name__ == "__main__":
    sys.exit(main())
