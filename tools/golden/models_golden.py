#!/usr/bin/env python3
"""Write tests/fixtures/models/tiny-sd{1,2}/: tiny random SD pipelines in diffusers layout + goldens.

Versions used for the committed fixtures: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1,
transformers==5.24.0, safetensors==0.8.0.

  python3 -m venv /work/pyenv && /work/pyenv/bin/pip install torch==2.15.0 diffusers==0.42.1 \\
      transformers==5.24.0 safetensors
  /work/pyenv/bin/python tools/golden/models_golden.py           # (re)writes both folders
  /work/pyenv/bin/python tools/golden/models_golden.py --check   # reload from disk, compare goldens

Deterministic: fixed seeds, one torch thread; a rerun writes byte-identical files.

Each folder is what `StableDiffusionPipeline.save_pretrained(dir, safe_serialization=True)`
writes (model_index.json, text_encoder/, unet/, vae/, scheduler/), except tokenizer/, which is a
plain copy of weights/clip_tokenizer/ (for tiny-sd2 with pad token "!", as SD2 ships it).

  tiny-sd1  SD1.x-like: CLIP quick_gelu, UNet heads from the legacy scalar attention_head_dim,
            conv proj_in/proj_out, PNDM scheduler (epsilon). Weights float32 on disk.
  tiny-sd2  SD2.x-like: CLIP gelu, per-block attention_head_dim list, linear proj_in/proj_out,
            upcast_attention, DDIM scheduler (v_prediction). Weights float16 on disk; the goldens
            are computed with those f16-rounded weights cast back to f32, so they are exact for
            the stored weights.

Text encoder key names: tiny-sd1 has them as the SD checkpoints on the Hub do
(`text_model.embeddings.token_embedding.weight`, transformers 4 layout; rewritten here after
saving), tiny-sd2 as transformers 5 save_pretrained writes them (`embeddings.token_embedding.weight`,
no `text_model.` prefix). transformers 5 loads both; a loader should too.

The text encoder has vocab_size 1000 (not 49408) to stay small: golden input_ids are < 1000, so
ids from the real tokenizer (bos 49406, eos 49407) do NOT fit this model.

Every parameter is re-initialised from a fixed-seed normal (diffusers zero-initialises conv_out
and proj_out, which would hide whole layers): weights N(0, (GAIN/sqrt(fan_in))^2), biases
N(0, 0.1^2), norm weights 1 + 0.1 N, norm biases 0.1 N, embeddings N(0, 0.5^2).

Goldens (float32 safetensors, NCHW as PyTorch has them, batch 2), in each model folder:
  golden_text_encoder.safetensors  input_ids (2, 77) int64, last_hidden_state (2, 77, D),
                                   hidden_states.{0..=L} (0 = embeddings, L = before final LN)
  golden_unet.safetensors          sample (2, 4, h, w), timestep (2,) f32, encoder_hidden_states
                                   (2, 77, cross_attention_dim) -> out (2, 4, h, w); forward-hook
                                   probes (module output, or [0] of a block's output tuple):
                                   probe.time_proj, probe.time_embedding, probe.conv_in,
                                   probe.down_blocks.{i}, probe.mid_block, probe.up_blocks.{i},
                                   probe.conv_norm_out (before SiLU), probe.conv_act (after)
  golden_vae.safetensors           decode: z -> decoded = vae.decode(z).sample; probe.post_quant_conv,
                                   probe.decoder.{conv_in, mid_block, up_blocks.{i}, conv_act}
                                   encode: image in [-1, 1] -> moments = quant_conv(encoder(image))
                                   (mean ++ logvar), latent_mean = encode(image).latent_dist.mean;
                                   probe.encoder.{conv_in, down_blocks.{i}, mid_block, conv_act}
  golden_info.json                 versions, seed, output stds, heads/head_dim of every UNet
                                   attention, name/shape/dtype of every golden tensor
"""

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from torch import nn
import diffusers
import safetensors
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "weights" / "clip_tokenizer"
OUT = ROOT / "tests" / "fixtures" / "models"
TOKENIZER_FILES = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "LICENSE"]

GAIN = 1.0  # weight std = GAIN / sqrt(fan_in)
SEQ = 77

# The scheduler_config.json of runwayml/stable-diffusion-v1-5 (PNDM) and of
# stabilityai/stable-diffusion-2-1 (DDIM, v_prediction).
SCHED_SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                 num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                 trained_betas=None)
SCHED_SD2 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                 num_train_timesteps=1000, prediction_type="v_prediction", set_alpha_to_one=False,
                 skip_prk_steps=True, steps_offset=1, trained_betas=None)

MODELS = {
    "tiny-sd1": dict(
        seed=1,
        dtype=torch.float32,
        text=dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=SEQ, hidden_act="quick_gelu",
                  # SD1.5's text_encoder/config.json has these legacy ids (pooled output = argmax id)
                  bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=32),
        unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                  layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                  attention_head_dim=2, norm_num_groups=4, use_linear_projection=False),
        vae=dict(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                 latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=0.18215,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
        scheduler=(PNDMScheduler, SCHED_SD1),
        latent_hw=(8, 12),  # UNet sample
        vae_z_hw=(4, 6),    # VAE latent -> image 8 x 12
        pad_token=None,     # tokenizer as shipped (pad = <|endoftext|>)
        # text encoder keys as every SD1.x/2.x checkpoint on the Hub has them (transformers 4)
        text_key_prefix="text_model.",
        # golden ids: bos-like 998, eos-like 999 (largest id: legacy argmax finds it), pad = eos
        ids=dict(bos=998, eos=999, pad=999, lengths=(5, 11)),
    ),
    "tiny-sd2": dict(
        seed=2,
        dtype=torch.float16,
        text=dict(vocab_size=1000, hidden_size=24, intermediate_size=40, num_hidden_layers=3,
                  num_attention_heads=3, max_position_embeddings=SEQ, hidden_act="gelu",
                  bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=24),
        unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 24, 32),
                  layers_per_block=2,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  cross_attention_dim=24, attention_head_dim=(2, 3, 4), norm_num_groups=8,
                  use_linear_projection=True, upcast_attention=True),
        vae=dict(in_channels=3, out_channels=3, block_out_channels=(8, 16, 16), layers_per_block=2,
                 latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.18215,
                 down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3),
        scheduler=(DDIMScheduler, SCHED_SD2),
        latent_hw=(8, 16),
        vae_z_hw=(4, 6),    # -> image 16 x 24
        pad_token="!",      # SD2's tokenizer pads with "!" (id 0)
        # text encoder keys as transformers 5 save_pretrained writes them (no text_model. prefix)
        text_key_prefix="",
        ids=dict(bos=998, eos=999, pad=0, lengths=(7, 20)),
    ),
}


# ----------------------------------------------------------------------------------------------
# weights

def reinit(model: nn.Module, seed: int) -> None:
    """Overwrite every parameter with a fixed-seed normal, walking modules in a fixed order."""
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g, dtype=torch.float32)

    seen = set()
    with torch.no_grad():
        for mname, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                full = f"{mname}.{pname}" if mname else pname
                assert full not in seen, full
                seen.add(full)
                if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                    val = (1.0 + 0.1 * randn(p.shape)) if pname == "weight" else 0.1 * randn(p.shape)
                elif isinstance(module, nn.Embedding):
                    val = 0.5 * randn(p.shape)
                elif isinstance(module, (nn.Linear, nn.Conv2d)):
                    if pname == "weight":
                        fan_in = p[0].numel()
                        val = (GAIN / math.sqrt(fan_in)) * randn(p.shape)
                    else:
                        val = 0.1 * randn(p.shape)
                else:
                    raise TypeError(f"unexpected parameter {full} in {type(module).__name__}")
                p.copy_(val)
    n_all = sum(1 for _ in model.named_parameters())
    assert len(seen) == n_all, (len(seen), n_all)


# ----------------------------------------------------------------------------------------------
# inputs

def make_input_ids(spec, g) -> torch.Tensor:
    """Two rows like a tokenized prompt: [bos, words..., eos, pad...], words in [3, 990)."""
    rows = []
    for n_words in spec["lengths"]:
        words = torch.randint(3, 990, (n_words,), generator=g).tolist()
        row = [spec["bos"]] + words + [spec["eos"]]
        row += [spec["pad"]] * (SEQ - len(row))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.int64)


class Probes:
    """Forward hooks storing a module's output (the hidden_states part of a tuple) as probe.<name>."""

    def __init__(self):
        self.out = {}
        self.handles = []

    def add(self, name, module):
        def hook(_mod, _inp, output):
            if isinstance(output, tuple):
                output = output[0]
            assert name not in self.out, f"{name} called twice"
            self.out[name] = output.detach().clone().float().contiguous()
        self.handles.append(module.register_forward_hook(hook))

    def remove(self):
        for h in self.handles:
            h.remove()


def text_golden(te: CLIPTextModel, input_ids):
    out = te(input_ids, output_hidden_states=True)
    hs = out.hidden_states
    L = te.config.num_hidden_layers
    assert len(hs) == L + 1, len(hs)
    # hidden_states[0] is the embeddings output, hidden_states[L] is before the final layer norm
    tm = getattr(te, "text_model", te)  # transformers 5 dropped the text_model wrapper module
    emb = tm.embeddings(input_ids=input_ids)
    assert torch.equal(hs[0], emb)
    assert torch.equal(tm.final_layer_norm(hs[L]), out.last_hidden_state)
    assert not torch.equal(hs[L], out.last_hidden_state)
    t = {"input_ids": input_ids, "last_hidden_state": out.last_hidden_state}
    for i, h in enumerate(hs):
        t[f"hidden_states.{i}"] = h
    return t


def unet_golden(unet: UNet2DConditionModel, sample, timestep, ehs):
    p = Probes()
    p.add("probe.time_proj", unet.time_proj)
    p.add("probe.time_embedding", unet.time_embedding)
    p.add("probe.conv_in", unet.conv_in)
    for i, b in enumerate(unet.down_blocks):
        p.add(f"probe.down_blocks.{i}", b)
    p.add("probe.mid_block", unet.mid_block)
    for i, b in enumerate(unet.up_blocks):
        p.add(f"probe.up_blocks.{i}", b)
    p.add("probe.conv_norm_out", unet.conv_norm_out)
    p.add("probe.conv_act", unet.conv_act)
    out = unet(sample, timestep, encoder_hidden_states=ehs).sample
    p.remove()
    t = {"sample": sample, "timestep": timestep, "encoder_hidden_states": ehs, "out": out}
    t.update(p.out)
    return t


def vae_golden(vae: AutoencoderKL, z, image):
    # decode
    p = Probes()
    p.add("probe.post_quant_conv", vae.post_quant_conv)
    p.add("probe.decoder.conv_in", vae.decoder.conv_in)
    p.add("probe.decoder.mid_block", vae.decoder.mid_block)
    for i, b in enumerate(vae.decoder.up_blocks):
        p.add(f"probe.decoder.up_blocks.{i}", b)
    p.add("probe.decoder.conv_act", vae.decoder.conv_act)
    decoded = vae.decode(z).sample
    p.remove()
    dec_probes = p.out
    # encode
    p = Probes()
    p.add("probe.encoder.conv_in", vae.encoder.conv_in)
    for i, b in enumerate(vae.encoder.down_blocks):
        p.add(f"probe.encoder.down_blocks.{i}", b)
    p.add("probe.encoder.mid_block", vae.encoder.mid_block)
    p.add("probe.encoder.conv_act", vae.encoder.conv_act)
    moments = vae.quant_conv(vae.encoder(image))
    p.remove()
    enc_probes = p.out
    latent_mean = vae.encode(image).latent_dist.mean
    assert torch.equal(latent_mean, moments[:, : vae.config.latent_channels])
    t = {"z": z, "decoded": decoded}
    t.update(dec_probes)
    t.update({"image": image, "moments": moments, "latent_mean": latent_mean})
    t.update(enc_probes)
    return t


def make_inputs(spec, unet_cfg, text_cfg, vae_cfg):
    g = torch.Generator().manual_seed(1000 + spec["seed"])
    h, w = spec["latent_hw"]
    zh, zw = spec["vae_z_hw"]
    f = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    return dict(
        input_ids=make_input_ids(spec["ids"], g),
        sample=torch.randn((2, unet_cfg["in_channels"], h, w), generator=g),
        timestep=torch.tensor([999.0, 321.0], dtype=torch.float32),
        encoder_hidden_states=torch.randn((2, SEQ, unet_cfg["cross_attention_dim"]), generator=g),
        z=torch.randn((2, vae_cfg["latent_channels"], zh, zw), generator=g),
        image=torch.rand((2, vae_cfg["in_channels"], zh * f, zw * f), generator=g) * 2.0 - 1.0,
    )


def compute_goldens(te, unet, vae, inp):
    with torch.no_grad():
        return (
            text_golden(te, inp["input_ids"]),
            unet_golden(unet, inp["sample"], inp["timestep"], inp["encoder_hidden_states"]),
            vae_golden(vae, inp["z"], inp["image"]),
        )


def contig(d):
    return {k: v.detach().contiguous() for k, v in d.items()}


# ----------------------------------------------------------------------------------------------
# write

def write_tokenizer(dst: Path, pad_token):
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(VOCAB / name, dst / name)
    if pad_token is not None:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            cfg = json.loads((dst / name).read_text())
            cfg["pad_token"] = pad_token
            (dst / name).write_text(json.dumps(cfg, indent=2) + "\n")


def add_key_prefix(path: Path, prefix: str):
    """Rewrite a safetensors file with every key prefixed (same tensors, same metadata)."""
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {prefix + k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata=meta)


def heads_report(unet):
    """Per attention module: heads and head dim as diffusers built them."""
    rows = {}
    for name, m in unet.named_modules():
        if isinstance(m, diffusers.models.attention_processor.Attention):
            rows[name] = dict(heads=m.heads, head_dim=m.inner_dim // m.heads, inner_dim=m.inner_dim,
                              upcast_attention=m.upcast_attention)
    return rows


def build(name, spec):
    torch.manual_seed(spec["seed"])  # constructors draw from the global RNG; reinit overwrites all
    te = CLIPTextModel(CLIPTextConfig(**spec["text"])).eval()
    unet = UNet2DConditionModel(**spec["unet"]).eval()
    vae = AutoencoderKL(**spec["vae"]).eval()
    reinit(te, spec["seed"] * 100 + 1)
    reinit(unet, spec["seed"] * 100 + 2)
    reinit(vae, spec["seed"] * 100 + 3)
    if spec["dtype"] == torch.float16:
        # round to f16 (what goes on disk), then compute goldens with exactly those values in f32
        for m in (te, unet, vae):
            m.half().float()
    return te, unet, vae


def write(name, spec):
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    te, unet, vae = build(name, spec)
    inp = make_inputs(spec, spec["unet"], spec["text"], spec["vae"])
    g_text, g_unet, g_vae = compute_goldens(te, unet, vae, inp)

    sched_cls, sched_cfg = spec["scheduler"]
    tok = CLIPTokenizer.from_pretrained(str(VOCAB))
    save_dtype = spec["dtype"]
    pipe = StableDiffusionPipeline(
        vae=vae.to(save_dtype), text_encoder=te.to(save_dtype), tokenizer=tok,
        unet=unet.to(save_dtype), scheduler=sched_cls.from_config(sched_cfg),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(d), safe_serialization=True)
    write_tokenizer(d / "tokenizer", spec["pad_token"])
    if spec["text_key_prefix"]:
        add_key_prefix(d / "text_encoder" / "model.safetensors", spec["text_key_prefix"])

    goldens = {"text_encoder": g_text, "unet": g_unet, "vae": g_vae}
    for k, t in goldens.items():
        save_file(contig(t), str(d / f"golden_{k}.safetensors"))

    unet = unet.float()
    info = dict(
        generator="tools/golden/models_golden.py",
        versions=dict(python=sys.version.split()[0], torch=torch.__version__, diffusers=diffusers.__version__,
                      transformers=transformers.__version__, safetensors=safetensors.__version__),
        seed=spec["seed"],
        weights_dtype_on_disk=str(save_dtype).replace("torch.", ""),
        text_encoder_key_prefix=spec["text_key_prefix"],
        init=f"weights N(0,({GAIN}/sqrt(fan_in))^2), biases N(0,0.1^2), norm w 1+0.1N, norm b 0.1N, "
             "embeddings N(0,0.5^2)",
        output_std=dict(
            text_encoder_last_hidden_state=g_text["last_hidden_state"].std().item(),
            unet_out=g_unet["out"].std().item(),
            vae_decoded=g_vae["decoded"].std().item(),
            vae_moments=g_vae["moments"].std().item(),
        ),
        unet_attention=heads_report(unet),
        tensors={f"golden_{k}.safetensors": {n: dict(shape=list(v.shape), dtype=str(v.dtype).replace("torch.", ""))
                                              for n, v in t.items()}
                 for k, t in goldens.items()},
    )
    (d / "golden_info.json").write_text(json.dumps(info, indent=2) + "\n")
    for k, v in info["output_std"].items():
        assert 0.1 < v < 10.0, (name, k, v)
        print(f"{name}: {k} std {v:.4f}")


# ----------------------------------------------------------------------------------------------
# check: reload what is on disk, recompute, compare exactly

def check(name, spec):
    d = OUT / name
    pipe = StableDiffusionPipeline.from_pretrained(str(d), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    te, unet, vae = pipe.text_encoder.float().eval(), pipe.unet.float().eval(), pipe.vae.float().eval()
    # the on-disk dtype is the one we meant
    for sub, fname in (("text_encoder", "model.safetensors"), ("unet", "diffusion_pytorch_model.safetensors"),
                       ("vae", "diffusion_pytorch_model.safetensors")):
        sd = load_file(str(d / sub / fname))
        dtypes = {v.dtype for v in sd.values()}
        assert dtypes == {spec["dtype"]}, (name, sub, dtypes)
        if sub == "text_encoder":
            assert all(k.startswith(spec["text_key_prefix"]) for k in sd), (name, sorted(sd)[:3])
            assert not spec["text_key_prefix"] or len(te.state_dict()) == len(sd)
    ok = True
    for k, model_out in zip(("text_encoder", "unet", "vae"), compute_goldens(
            te, unet, vae, load_inputs(d))):
        gold = load_file(str(d / f"golden_{k}.safetensors"))
        assert set(gold) == set(model_out), (k, set(gold) ^ set(model_out))
        for n, v in gold.items():
            same = torch.equal(v, model_out[n].contiguous())
            if not same:
                ok = False
                print(f"{name} {k} {n}: MISMATCH max abs {(v - model_out[n]).abs().max().item():.3e}")
    print(f"{name}: reload {'exact' if ok else 'MISMATCH'}; pipeline scheduler "
          f"{type(pipe.scheduler).__name__} prediction_type={pipe.scheduler.config.prediction_type}; "
          f"tokenizer pad {pipe.tokenizer.pad_token!r} id {pipe.tokenizer.pad_token_id}")
    return ok


def load_inputs(d: Path):
    t = load_file(str(d / "golden_text_encoder.safetensors"))
    u = load_file(str(d / "golden_unet.safetensors"))
    v = load_file(str(d / "golden_vae.safetensors"))
    return dict(input_ids=t["input_ids"], sample=u["sample"], timestep=u["timestep"],
                encoder_hidden_states=u["encoder_hidden_states"], z=v["z"], image=v["image"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only reload and compare, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    ok = True
    for name, spec in MODELS.items():
        if not args.check:
            write(name, spec)
        ok &= check(name, spec)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
