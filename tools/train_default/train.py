#!/usr/bin/env python3
"""Train stipple's default model: a small Stable Diffusion (CLIPTextModel + UNet2DConditionModel +
AutoencoderKL, diffusers layout) on Noto emoji + procedural shapes, on a CPU.

Versions (pinned; the venv of tools/golden): Python 3.11, torch==2.15.0 (CPU is enough),
diffusers==0.42.1, transformers==5.24.0, safetensors==0.8.0, numpy==2.4.6, pillow==13.0.0.

  PY=/work/pyenv/bin/python; T=tools/train_default/train.py; C=/work/data-cache
  $PY tools/train_default/prepare_data.py --cache $C     # data -> $C/dataset/
  nice -n 19 $PY $T vae        --cache $C                 # -> $C/runs/vae/   (+ latents.pt)
  nice -n 19 $PY $T unet       --cache $C                 # -> $C/runs/unet/  (text encoder + UNet)
  nice -n 19 $PY $T classifier --cache $C                 # -> $C/runs/classifier/
  $PY $T export --cache $C --name NAME                    # -> weights/NAME/ (fp16, diffusers)
  $PY $T prompts --cache $C                               # -> tools/train_default/eval/prompts.json, .txt (96)
  $PY $T sample --model weights/NAME --out DIR            # diffusers reference images (optional)
  $PY $T eval --cache $C --images DIR                     # adherence of DIR/0000.png.. + chance

Resume: every training stage saves CACHE/runs/STAGE/ckpt.pt (atomically) every --save-every
steps and when it gets SIGINT/SIGTERM (finishing the current step first), and starts from it
unless --no-resume. Batches are drawn from a generator seeded by (seed, step), so a resumed run
draws the same batches as an uninterrupted one. --steps is the total: rerunning with a larger
--steps continues training. Threads: torch.set_num_threads(--threads, default 2).
Across sessions (only git survives): `export` (safe while `unet` runs) writes training_state.json
into the model folder; `unet --init-from weights/NAME` continues from it on a fresh machine
(fp16 EMA weights -> fp32, step counter, LR schedule, batch order; AdamW state lost: --rewarm).

Model (see README.md for sizes): 64x64 RGB images; VAE with downscale 4 (16x16x4 latents);
UNet (64, 128, 128) with cross-attention at 8x8 and 4x4 and in the mid block; CLIP text encoder
4 layers x 128 wide with the full 49408-token vocabulary of weights/clip_tokenizer/.
Diffusion: DDPM, 1000 steps, SD's scaled_linear betas (0.00085..0.012), epsilon prediction,
min-SNR(5) loss weighting, caption dropout 10% (empty prompt) for classifier-free guidance,
EMA weights exported. Default sampler: DPMSolverMultistepScheduler (DPM++ 2M), 20 steps.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = ROOT / "weights" / "clip_tokenizer"
TOKENIZER_FILES = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "LICENSE"]
HERE = Path(__file__).resolve().parent
EVAL_PROMPTS = HERE / "eval" / "prompts.json"  # committed: `prompts` rewrites it identically
EVAL_CLASSIFIER = HERE / "eval" / "classifier.safetensors"  # committed copy of runs/classifier/'s

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
    down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[32, 64, 64], layers_per_block=1, norm_num_groups=32, act_fn="silu",
)
UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[64, 128, 128],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    cross_attention_dim=128, attention_head_dim=4,  # diffusers' legacy name: 4 heads (head dim 32)
    norm_num_groups=32, use_linear_projection=False,
)
TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
    num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=128,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)
SCHED = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
             prediction_type="epsilon", steps_offset=1, clip_sample=False, set_alpha_to_one=False)
SAMPLER_STEPS = 20
GUIDANCE = 7.5  # the CLI default; best of 3, 5, 7.5, 10 in the eval sweep (README)


# ----------------------------------------------------------------------------------------------
# common


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


class Stop:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current step and exits."""

    def __init__(self):
        self.flag = False
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._set)

    def _set(self, signum, frame):
        if self.flag:  # second signal: give up at once
            sys.exit(130)
        log(f"signal {signum}: saving a checkpoint after this step")
        self.flag = True


def save_atomic(obj, path: Path):
    """Write to a temporary file in the same folder, fsync, then rename over PATH: a reader
    (export while training runs) sees either the old or the new checkpoint, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def now_utc():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def data_version(cache: Path):
    """Where the data came from + sha256 of the built dataset (meta.json, then images.npy)."""
    d = cache / "dataset"
    src = json.loads((d / "meta.json").read_text())["source"]
    h = hashlib.sha256()
    for name in ("meta.json", "images.npy"):
        with open(d / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
    return {"npm": src["npm"], "tgz_sha256": src["tgz_sha256"], "dataset_sha256": h.hexdigest()}


# --init-from DIR: an exported diffusers folder (fp16) + its training_state.json

TE_FILE, UNET_FILE, VAE_FILE = ("text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                                "vae/diffusion_pytorch_model.safetensors")


def read_init(d: Path):
    if not (d / "model_index.json").exists():
        sys.exit(f"--init-from {d}: not a diffusers folder (no model_index.json)")
    p = d / "training_state.json"
    if p.exists():
        return json.loads(p.read_text())
    log(f"--init-from {d}: no training_state.json; step counters start at 0 (VAE taken as complete)")
    return {}


def load_weights(model, path: Path):
    """fp16 safetensors -> fp32 parameters of MODEL (strict; tolerates a text_model. prefix)."""
    from safetensors.torch import load_file
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    own = set(model.state_dict())
    if set(sd) != own:
        for fix in (lambda k: k[len("text_model."):] if k.startswith("text_model.") else k,
                    lambda k: k if k.startswith("text_model.") else "text_model." + k):
            alt = {fix(k): v for k, v in sd.items()}
            if set(alt) == own:
                sd = alt
                break
    model.load_state_dict(sd, strict=True)
    return model


def warn_mismatch(what, state: dict, args, keys):
    for k in keys:
        if k in state and getattr(args, k) != state[k]:
            log(f"WARNING: --{k.replace('_', '-')} {getattr(args, k)} differs from {what}'s {state[k]} "
                f"(the continued run is not the same as an uninterrupted one)")


def rewarm(step, rewarm_from, rewarm_steps):
    """LR factor after --init-from: the AdamW moments are not exported, so ramp up again."""
    if rewarm_from is None or rewarm_steps <= 0:
        return 1.0
    return min(1.0, (step - rewarm_from + 1) / rewarm_steps)


def load_ckpt(path: Path, resume: bool):
    if resume and path.exists():
        return torch.load(path, map_location="cpu", weights_only=False)
    return None


class Data:
    """images.npy + meta.json from prepare_data.py; emoji indices first, then shapes."""

    def __init__(self, cache: Path, subset: int = 0):
        d = cache / "dataset"
        self.meta = json.loads((d / "meta.json").read_text())
        self.images = torch.from_numpy(np.load(d / "images.npy"))  # (N, 64, 64, 3) uint8
        self.items = self.meta["items"]
        ne = self.meta["n_emoji"]
        self.emoji = torch.arange(ne)
        self.shapes = torch.arange(ne, len(self.items))
        if subset:
            self.emoji, self.shapes = self.emoji[:subset], self.shapes[:subset]

    def sample(self, g: torch.Generator, n: int, emoji_frac: float):
        ne = int((torch.rand(n, generator=g) < emoji_frac).sum())
        ie = self.emoji[torch.randint(len(self.emoji), (ne,), generator=g)]
        is_ = self.shapes[torch.randint(len(self.shapes), (n - ne,), generator=g)]
        return torch.cat([ie, is_])

    def pixels(self, idx):  # -> (B, 3, 64, 64) float in [-1, 1]
        return self.images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0


def step_gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def lr_at(step, base, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))  # cosine to 10%


def set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------
# VAE


def make_vae():
    from diffusers import AutoencoderKL
    return AutoencoderKL(**VAE_CONFIG)


def grad_l1(a, b):
    """L1 between image gradients (keeps edges sharp without a perceptual network)."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def cmd_vae(args):
    data = Data(args.cache, args.subset)
    run = args.cache / "runs" / ("vae" + args.tag)
    torch.manual_seed(args.seed)
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    ck = load_ckpt(run / "ckpt.pt", args.resume)
    step, step0, rewarm_from, init_sf, complete_at = 0, 0, None, None, None
    if ck:
        vae.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); step = step0 = ck["step"]
        rewarm_from, init_sf, complete_at = ck.get("rewarm_from"), ck.get("init_sf"), ck.get("complete_at")
        if complete_at is not None:
            args.steps = complete_at
        log(f"resumed {run / 'ckpt.pt'} at step {step}")
    elif args.init_from:
        vs = read_init(args.init_from).get("vae", {})
        load_weights(vae, args.init_from / VAE_FILE)
        init_sf = json.loads((args.init_from / "vae" / "config.json").read_text())["scaling_factor"]
        step = step0 = vs.get("steps_done", args.steps)
        rewarm_from = step
        if vs.get("complete", True):  # an exported VAE is a finished one: its UNet knows its latents
            if step != args.steps:
                log(f"the exported VAE finished at {step} steps: not training it further (--steps ignored)")
            args.steps = complete_at = step
        log(f"VAE weights from {args.init_from} (fp16 -> fp32), {step}/{args.steps} steps done")
    log(f"VAE {n_params(vae) / 1e6:.2f} M params; {len(data.emoji)} emoji + {len(data.shapes)} shapes")
    stop = Stop()
    save = lambda: save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                                "config": VAE_CONFIG, "args": vars(args), "rewarm_from": rewarm_from,
                                "init_sf": init_sf, "complete_at": complete_at}, run / "ckpt.pt")
    vae.train()
    t0, hist = time.time(), []
    while step < args.steps and not stop.flag:
        g = step_gen(args.seed, step)
        x = data.pixels(data.sample(g, args.batch, args.emoji_frac))
        if args.crop and args.crop < x.shape[-1]:  # fully convolutional: random crops cost less
            o = torch.randint(0, x.shape[-1] - args.crop + 1, (2,), generator=g).tolist()
            x = x[..., o[0]:o[0] + args.crop, o[1]:o[1] + args.crop]
        set_lr(opt, lr_at(step, args.lr, 200, args.steps) * rewarm(step, rewarm_from, args.rewarm))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        y = vae.decode(z).sample
        rec = (y - x).abs().mean() + (y - x).pow(2).mean()
        sharp = grad_l1(y, x)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = rec + args.sharp * sharp + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        hist.append([rec.item(), sharp.item(), kl.item()])
        if step % args.log_every == 0 or step == args.steps:
            h = np.mean(hist, 0); hist = []
            dt = time.time() - t0
            log(f"vae step {step}/{args.steps} rec {h[0]:.4f} grad {h[1]:.4f} kl {h[2]:.3f} "
                f"{args.log_every / dt:.3f} it/s")
            t0 = time.time()
        if step % args.save_every == 0:
            save()
    if step > step0 or not (run / "ckpt.pt").exists():
        save()
    if step < args.steps:
        log(f"stopped at step {step}; rerun the same command to resume")
        return
    if rewarm_from is not None and step > rewarm_from:
        init_sf = None  # trained on after --init-from: measure the scaling factor again
    finish_vae(vae, data, args.seed, run, step, init_sf)


def finish_vae(vae, data, seed, run: Path, step: int, sf=None):
    """Latents of the whole dataset -> run/final.pt (+ recon.png). SF None: measure it (SD's
    1/std of sampled latents); given (weights from --init-from): keep the one the UNet knows."""
    # final: latents of the whole dataset + scaling factor (1 / std of sampled latents, like SD)
    vae.eval()
    n = len(data.items)
    means, logvars = [], []
    with torch.no_grad():
        for i in range(0, n, 256):
            post = vae.encode(data.pixels(torch.arange(i, min(n, i + 256)))).latent_dist
            means.append(post.mean); logvars.append(post.logvar)
        mean, logvar = torch.cat(means), torch.cat(logvars)
        g = torch.Generator().manual_seed(seed)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        measured = float(1.0 / z.std())
        if sf is None:
            sf = measured
        else:
            log(f"scaling_factor {sf:.4f} kept from the exported VAE (measured on these latents: {measured:.4f})")
        sel = torch.cat([data.emoji[:64], data.shapes[:64]])
        x = data.pixels(sel)
        y = vae.decode(mean[sel]).sample.clamp(-1, 1)
        psnr = (10 * torch.log10(4.0 / (y - x).pow(2).mean((1, 2, 3)))).mean().item()
    cfg = dict(VAE_CONFIG, scaling_factor=sf)
    save_atomic({"model": vae.state_dict(), "config": cfg, "step": step,
                 "latent_mean": mean.half(), "latent_logvar": logvar.half()}, run / "final.pt")
    save_grid(torch.cat([x[:16], y[:16], x[-16:], y[-16:]]), run / "recon.png", 16)
    log(f"wrote {run / 'final.pt'}: latents {tuple(mean.shape)}, scaling_factor {sf:.4f}, "
        f"recon PSNR {psnr:.2f} dB (decoded means; grid in {run / 'recon.png'})")


def save_grid(x, path: Path, ncol: int):
    from PIL import Image
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    n, h, w, c = x.shape
    nrow = (n + ncol - 1) // ncol
    grid = np.full((nrow * h, ncol * w, 3), 255, np.uint8)
    for i in range(n):
        grid[(i // ncol) * h:(i // ncol + 1) * h, (i % ncol) * w:(i % ncol + 1) * w] = x[i]
    Image.fromarray(grid).save(path)


# ----------------------------------------------------------------------------------------------
# text encoder + UNet


def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel
    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def make_unet():
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(**UNET_CONFIG)


def tokenize_all(data: Data):
    """All distinct captions -> (U, 77) ids; per item, the indices of its captions. Index 0 = ''."""
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    caps, where, item_caps = [""], {"": 0}, []
    for it in data.items:
        ix = []
        for c in it["captions"]:
            if c not in where:
                where[c] = len(caps); caps.append(c)
            ix.append(where[c])
        item_caps.append(ix)
    ids = tok(caps, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return ids, item_caps, caps


class EMA:
    def __init__(self, models, decay):
        self.decay = decay
        self.shadow = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]

    @torch.no_grad()
    def update(self, models, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for sh, m in zip(self.shadow, models):
            for k, v in m.state_dict().items():
                if v.dtype.is_floating_point:
                    sh[k].mul_(d).add_(v.detach(), alpha=1 - d)
                else:
                    sh[k].copy_(v)


def cmd_unet(args):
    from diffusers import DDPMScheduler
    data = Data(args.cache, args.subset)
    init = read_init(args.init_from) if args.init_from else None
    vae_final = args.cache / "runs" / ("vae" + args.tag) / "final.pt"
    if not vae_final.exists():
        if not init:
            sys.exit(f"{vae_final} missing: run the vae stage to the end first (or give --init-from)")
        log(f"{vae_final} missing: encoding the dataset with the VAE of {args.init_from}")
        vae = load_weights(make_vae(), args.init_from / VAE_FILE)
        sf0 = json.loads((args.init_from / "vae" / "config.json").read_text())["scaling_factor"]
        finish_vae(vae, data, args.seed, vae_final.parent, init.get("vae", {}).get("steps_done", 0), sf0)
        del vae
    vf = torch.load(vae_final, map_location="cpu", weights_only=False)
    lat_mean, lat_std = vf["latent_mean"].float(), torch.exp(0.5 * vf["latent_logvar"].float())
    sf = vf["config"]["scaling_factor"]
    ids, item_caps, caps = tokenize_all(data)
    run = args.cache / "runs" / ("unet" + args.tag)
    torch.manual_seed(args.seed)
    te, unet = make_text_encoder(), make_unet()
    sched = DDPMScheduler(**{k: v for k, v in SCHED.items() if k not in ("steps_offset", "set_alpha_to_one")})
    ac = sched.alphas_cumprod
    snr = ac / (1 - ac)
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.999))
    ema = EMA([te, unet], args.ema)
    step, rewarm_from, history = 0, None, []
    ck = load_ckpt(run / "ckpt.pt", args.resume)
    ist = (init or {}).get("unet", {})
    if ck and init and ist.get("steps_done", 0) > ck["step"]:
        log(f"{run / 'ckpt.pt'} (step {ck['step']}) is behind {args.init_from} (step {ist['steps_done']}): "
            f"using --init-from")
        ck = None
    data_v = data_version(args.cache)
    if ck:
        te.load_state_dict(ck["te"]); unet.load_state_dict(ck["unet"]); opt.load_state_dict(ck["opt"])
        ema.shadow = ck["ema"]; step = ck["step"]
        rewarm_from, history = ck.get("rewarm_from"), ck.get("history", [])
        log(f"resumed {run / 'ckpt.pt'} at step {step}")
        history.append({"event": "resume", "step": step, "steps_planned": args.steps, "date": now_utc()})
    elif init:
        ivs = json.loads((args.init_from / "vae" / "config.json").read_text())["scaling_factor"]
        if abs(ivs - sf) > 1e-4 * abs(ivs):
            sys.exit(f"{vae_final} has scaling_factor {sf:.6f} but the VAE of {args.init_from} has {ivs:.6f}: "
                     f"the UNet was trained on other latents. Move {vae_final.parent} away (or run "
                     f"`vae --init-from {args.init_from}` in a fresh --tag) and rerun.")
        load_weights(te, args.init_from / TE_FILE); load_weights(unet, args.init_from / UNET_FILE)
        ema = EMA([te, unet], args.ema)  # the exported (EMA) weights start both copies
        step = rewarm_from = ist.get("steps_done", 0)
        history = ist.get("history", [])
        warn_mismatch(f"{args.init_from}", ist, args, ("seed", "batch", "lr", "emoji_frac", "cfg_drop", "min_snr",
                                                        "subset", "ema"))
        if ist.get("data", {}).get("dataset_sha256") not in (None, data_v["dataset_sha256"]):
            log("WARNING: the dataset differs from the one this model was trained on (sha256 of the dataset)")
        log(f"initialised text encoder + UNet from {args.init_from} ({ist.get('weights', 'ema')} weights, fp16 -> "
            f"fp32) at step {step}/{args.steps}; AdamW state is new: LR re-warm-up over {args.rewarm} steps")
        history.append({"event": "init-from", "from": str(args.init_from), "step": step,
                        "weights": ist.get("weights", "ema"), "steps_planned": args.steps, "date": now_utc()})
    else:
        history.append({"event": "start", "step": 0, "steps_planned": args.steps, "date": now_utc()})
    log(f"text encoder {n_params(te) / 1e6:.2f} M, UNet {n_params(unet) / 1e6:.2f} M params; "
        f"{len(caps)} distinct captions; scaling_factor {sf:.4f}")
    stop = Stop()
    save = lambda: save_atomic({"te": te.state_dict(), "unet": unet.state_dict(), "opt": opt.state_dict(),
                                "ema": ema.shadow, "step": step, "text_config": TEXT_CONFIG,
                                "unet_config": UNET_CONFIG, "scaling_factor": sf, "args": vars(args),
                                "vae_step": vf["step"], "data": data_v, "rewarm_from": rewarm_from,
                                "rewarm_steps": args.rewarm, "history": history, "saved_at": now_utc()},
                               run / "ckpt.pt")
    te.train(); unet.train()
    t0, hist = time.time(), []
    while step < args.steps and not stop.flag:
        g = step_gen(args.seed, step)
        idx = data.sample(g, args.batch, args.emoji_frac)
        b = len(idx)
        cap = torch.tensor([item_caps[i][int(torch.randint(len(item_caps[i]), (1,), generator=g))]
                            for i in idx.tolist()])
        cap[torch.rand(b, generator=g) < args.cfg_drop] = 0  # '' -> unconditional
        z = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=g)) * sf
        t = torch.randint(0, 1000, (b,), generator=g)
        noise = torch.randn(z.shape, generator=g)
        zt = sched.add_noise(z, noise, t)
        set_lr(opt, lr_at(step, args.lr, 500, args.steps) * rewarm(step, rewarm_from, args.rewarm))
        ctx = te(ids[cap]).last_hidden_state
        pred = unet(zt, t, ctx).sample
        w = torch.clamp(snr[t], max=args.min_snr) / snr[t]  # min-SNR weighting for epsilon
        loss = (w * (pred - noise).pow(2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update([te, unet], step)
        step += 1
        hist.append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            dt = time.time() - t0
            log(f"unet step {step}/{args.steps} loss {np.mean(hist):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{args.log_every / dt:.3f} it/s")
            hist, t0 = [], time.time()
        if step % args.save_every == 0:
            save()
    save()
    if step < args.steps:
        log(f"stopped at step {step}; rerun the same command to resume")
    else:
        log(f"done: {run / 'ckpt.pt'} (step {step}); next: export")


# ----------------------------------------------------------------------------------------------
# classifier (real images only) for the prompt-adherence metric


class Classifier(nn.Module):
    """Small CNN with one head per label: emoji class, and layout/colour/shape of the shapes set."""

    def __init__(self, n_emoji, n_col, n_shape):
        super().__init__()
        def blk(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.SiLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.SiLU())
        self.body = nn.Sequential(blk(3, 32), nn.MaxPool2d(2), blk(32, 64), nn.MaxPool2d(2),
                                  blk(64, 128), nn.MaxPool2d(2), blk(128, 256), nn.MaxPool2d(2))  # 4x4
        self.pool_feat = nn.Sequential(nn.Flatten(), nn.Linear(256 * 16, 512), nn.SiLU(), nn.Dropout(0.2))
        self.emoji = nn.Linear(512, n_emoji)
        self.layout = nn.Linear(512, 3)
        self.col_a, self.col_b = nn.Linear(512, n_col), nn.Linear(512, n_col)
        self.shape_a, self.shape_b = nn.Linear(512, n_shape), nn.Linear(512, n_shape)

    def forward(self, x):
        h = self.pool_feat(self.body(x))
        return {k: getattr(self, k)(h) for k in ("emoji", "layout", "col_a", "col_b", "shape_a", "shape_b")}


def labels_of(data: Data, idx):
    L = {k: [] for k in ("emoji", "layout", "col_a", "col_b", "shape_a", "shape_b")}
    lay = data.meta["layouts"]
    for i in idx.tolist():
        it = data.items[i]
        if it["kind"] == "emoji":
            vals = dict(emoji=it["label"], layout=-100, col_a=-100, col_b=-100, shape_a=-100, shape_b=-100)
        else:
            nb = lambda v: v if v >= 0 else -100
            vals = dict(emoji=-100, layout=lay.index(it["layout"]), col_a=it["colour_a"], shape_a=it["shape_a"],
                        col_b=nb(it["colour_b"]), shape_b=nb(it["shape_b"]))
        for k in L:
            L[k].append(vals[k])
    return {k: torch.tensor(v) for k, v in L.items()}


def augment(x, g):
    """Random scale/translate (white fill), contrast/brightness, blur, noise: robustness to the
    small geometric and texture differences of generated images. No flips (left/right matter)."""
    b = x.shape[0]
    s = 1.0 / (0.85 + 0.3 * torch.rand(b, generator=g))
    tx, ty = (torch.rand(2, b, generator=g) - 0.5) * 0.2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = s; theta[:, 1, 1] = s; theta[:, 0, 2] = tx; theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    x = 1.0 - F.grid_sample(1.0 - x, grid, padding_mode="zeros", align_corners=False)  # pad white
    c = 1 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.3
    x = (x - x.mean((1, 2, 3), keepdim=True)) * c + x.mean((1, 2, 3), keepdim=True)
    x = x + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.2
    blur = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    k = (torch.rand(b, 1, 1, 1, generator=g) < 0.3).float()
    x = k * blur + (1 - k) * x
    x = x + torch.randn(x.shape, generator=g) * 0.04 * torch.rand(b, 1, 1, 1, generator=g)
    return x.clamp(-1, 1)


def make_classifier(meta):
    return Classifier(meta["n_emoji"], len(meta["colours"]), len(meta["shapes"]))


def cmd_classifier(args):
    data = Data(args.cache, args.subset)
    run = args.cache / "runs" / ("classifier" + args.tag)
    torch.manual_seed(args.seed)
    net = make_classifier(data.meta)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.05)
    step, rewarm_from = 0, None
    ck = load_ckpt(run / "ckpt.pt", args.resume)
    if ck:
        net.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); step = ck["step"]
        rewarm_from = ck.get("rewarm_from")
        log(f"resumed {run / 'ckpt.pt'} at step {step}")
    elif args.init_from:  # classifier.safetensors written by a finished classifier run
        from safetensors import safe_open
        with safe_open(str(args.init_from), "pt") as f:
            st = json.loads(f.metadata()["training_state"])
            net.load_state_dict({k: (f.get_tensor(k).float() if f.get_tensor(k).is_floating_point()
                                     else f.get_tensor(k)) for k in f.keys()})
        step = rewarm_from = st["steps_done"]
        log(f"classifier weights from {args.init_from} (fp16 -> fp32), {step}/{args.steps} steps done")
    log(f"classifier {n_params(net) / 1e6:.2f} M params")
    stop = Stop()
    save = lambda: save_atomic({"model": net.state_dict(), "opt": opt.state_dict(), "step": step,
                                "args": vars(args), "rewarm_from": rewarm_from}, run / "ckpt.pt")
    net.train()
    t0, hist = time.time(), []
    while step < args.steps and not stop.flag:
        g = step_gen(args.seed, step)
        idx = data.sample(g, args.batch, args.emoji_frac)
        x, lab = augment(data.pixels(idx), g), labels_of(data, idx)
        set_lr(opt, lr_at(step, args.lr, 100, args.steps) * rewarm(step, rewarm_from, args.rewarm))
        out = net(x)
        loss = sum(F.cross_entropy(out[k], lab[k], ignore_index=-100)
                   for k in out if (lab[k] != -100).any())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        hist.append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            dt = time.time() - t0
            log(f"classifier step {step}/{args.steps} loss {np.mean(hist):.4f} {args.log_every / dt:.3f} it/s")
            hist, t0 = [], time.time()
        if step % args.save_every == 0:
            save()
    save()
    if step < args.steps:
        log(f"stopped at step {step}; rerun the same command to resume")
        return
    # fp16 copy (8 MB) to keep across sessions: `classifier --init-from` / `eval --classifier`
    from safetensors.torch import save_file
    st = {"steps_done": step, "steps_planned": args.steps, "seed": args.seed, "batch": args.batch,
          "data": data_version(args.cache), "date": now_utc()}
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()},
              str(run / "classifier.safetensors"), metadata={"training_state": json.dumps(st)})
    log(f"wrote {run / 'classifier.safetensors'}")
    # accuracy on freshly augmented real images (seed not used in training)
    net.eval()
    g = torch.Generator().manual_seed(10_000_019)
    with torch.no_grad():
        for name, pool in (("emoji", data.emoji), ("shapes", data.shapes[:2000])):
            correct = tot = 0
            for i in range(0, len(pool), 256):
                idx = pool[i:i + 256]
                out, lab = net(augment(data.pixels(idx), g)), labels_of(data, idx)
                ok = torch.ones(len(idx), dtype=torch.bool)
                for k in out:
                    m = lab[k] != -100
                    ok &= ~m | (out[k].argmax(1) == lab[k])
                correct += int(ok.sum()); tot += len(idx)
            log(f"classifier accuracy on augmented real {name}: {correct / tot:.3f} ({tot} images)")


# ----------------------------------------------------------------------------------------------
# export


def cmd_export(args):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import CLIPTokenizer
    out = (args.out or ROOT / "weights" / args.name).resolve()
    vae_p = args.cache / "runs" / ("vae" + args.tag) / "final.pt"
    unet_p = args.cache / "runs" / ("unet" + args.tag) / "ckpt.pt"
    vf = torch.load(vae_p, map_location="cpu", weights_only=False)
    # one open + read of the file: the training process replaces ckpt.pt by rename, never in place,
    # so this is the complete latest checkpoint even while `unet` is running
    with open(unet_p, "rb") as f:
        unet_mtime = os.fstat(f.fileno()).st_mtime
        uk = torch.load(f, map_location="cpu", weights_only=False)
    vae = AutoencoderKL(**vf["config"]); vae.load_state_dict(vf["model"])
    te, unet = make_text_encoder(), make_unet()
    te_sd, unet_sd = (uk["ema"] if not args.no_ema else [uk["te"], uk["unet"]])
    te.load_state_dict(te_sd); unet.load_state_dict(unet_sd)
    sched = DPMSolverMultistepScheduler(**{k: v for k, v in SCHED.items() if k not in ("clip_sample", "set_alpha_to_one")},
                                        timestep_spacing="trailing", algorithm_type="dpmsolver++", solver_order=2)
    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    final, out = out, out.with_name(out.name + ".partial")  # build beside it, swap in at the end
    if out.exists():
        shutil.rmtree(out)
    pipe = StableDiffusionPipeline(vae=vae.half(), text_encoder=te.half(), tokenizer=tok, unet=unet.half(),
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(out), safe_serialization=True)
    # tokenizer/: the files of weights/clip_tokenizer, unchanged
    shutil.rmtree(out / "tokenizer")
    (out / "tokenizer").mkdir()
    for f in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER_DIR / f, out / "tokenizer" / f)
    # text encoder keys as the SD checkpoints on the Hub have them (text_model. prefix)
    p = out / "text_encoder" / "model.safetensors"
    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
        tensors = {(k if k.startswith("text_model.") else "text_model." + k): f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(p), metadata=meta)
    # strict JSON: drop non-finite values (lambda_min_clipped = -inf is the default anyway)
    sc = out / "scheduler" / "scheduler_config.json"
    cfg = json.loads(sc.read_text())
    cfg = {k: v for k, v in cfg.items() if not (isinstance(v, float) and not math.isfinite(v))}
    sc.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(HERE / "APACHE-2.0.txt", out / "LICENSE")
    data_meta = json.loads((args.cache / "dataset" / "meta.json").read_text())["source"]
    st = training_state(args, uk, vf, unet_p, unet_mtime)
    (out / "training_state.json").write_text(json.dumps(st, indent=1) + "\n")
    u = st["unet"]
    if u["complete"]:
        status = f"complete: {u['steps_done']} of {u['steps_planned']} planned steps"
    else:
        status = (f"INCOMPLETE: {u['steps_done']} of {u['steps_planned']} planned steps "
                  f"({100 * u['steps_done'] / u['steps_planned']:.1f}%); a snapshot of a run still in progress")
    hist = [h for h in u["history"] if h.get("event") == "init-from"]
    resumed = (f" Continued {len(hist)} time(s) from exported fp16 weights without optimizer state "
               f"(at step {', '.join(str(h['step']) for h in hist)}; LR re-warm-up each time)." if hist else "")
    (out / "README.md").write_text(MODEL_README.format(
        name=final.name, npm=data_meta["npm"], sha=data_meta["tgz_sha256"], status=status, resumed=resumed,
        unet_step=u["steps_done"], samples=u["samples_seen"], ema=u["ema_decay"], wts=st["weights"],
        vae_step=vf["step"], sf=vf["config"]["scaling_factor"], steps=SAMPLER_STEPS, guidance=GUIDANCE,
        seed=st["seed"], dsha=st["data"]["dataset_sha256"][:16], date=st["exported_at"]))
    if final.exists():
        old = final.with_name(final.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(out, final)
        shutil.rmtree(old)
    else:
        os.replace(out, final)
    out = final
    total = 0
    for f in sorted(out.rglob("*")):
        if f.is_file():
            total += f.stat().st_size
            print(f"  {f.stat().st_size / 1e6:8.3f} MB  {f.relative_to(out)}")
    print(f"wrote {out}: {total / 1e6:.2f} MB in all ({total / 2**20:.2f} MiB)")


def training_state(args, uk, vf, unet_p: Path, unet_mtime: float):
    """What training_state.json records: how far each stage got, and what `--init-from` needs
    to continue (step counters, LR schedule, seed, data)."""
    a = uk.get("args", {})
    step, planned = uk["step"], a.get("steps", uk["step"])
    hist = uk.get("history") or [{"event": "start", "step": 0, "steps_planned": planned, "note": "not recorded"}]
    rw_from = uk.get("rewarm_from")
    lr = a.get("lr", 3e-4)
    return {
        "format": "stipple-training-state/1",
        "exported_at": now_utc(),
        "source_checkpoint": {"path": str(unet_p), "saved_at": uk.get("saved_at") or
                              time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unet_mtime))},
        "weights": "raw" if args.no_ema else "ema",
        "seed": a.get("seed", 0),
        "data": uk.get("data") or data_version(args.cache),
        "vae": {"steps_done": vf["step"], "steps_planned": vf["step"], "complete": True,
                "scaling_factor": vf["config"]["scaling_factor"]},
        "unet": {
            "steps_done": step, "steps_planned": planned, "complete": step >= planned,
            "samples_seen": step * a.get("batch", 32), "weights": "raw" if args.no_ema else "ema",
            "ema_decay": a.get("ema", 0.999), "batch": a.get("batch", 32), "lr": lr,
            "lr_schedule": f"linear warm-up 500 steps, cosine to 10% at steps_planned; "
                           f"after --init-from x min(1, (step - init step + 1) / rewarm_steps)",
            "lr_at_steps_done": lr_at(step, lr, 500, planned) * rewarm(step, rw_from, uk.get("rewarm_steps", 0)),
            "rewarm_from": rw_from, "rewarm_steps": uk.get("rewarm_steps"),
            "seed": a.get("seed", 0), "subset": a.get("subset", 0), "emoji_frac": a.get("emoji_frac", 0.6),
            "cfg_drop": a.get("cfg_drop", 0.1), "min_snr": a.get("min_snr", 5.0),
            "optimizer_state": "not exported (AdamW moments start at zero after --init-from)",
            "data_order": "batch of step s drawn from torch.Generator seeded seed * 1000003 + s",
            "history": hist,
        },
        "continue_with": f"train.py unet --init-from <this folder> --steps {planned}"
                         + (f" --seed {a['seed']}" if a.get("seed") else ""),
    }


MODEL_README = """# {name}

stipple's default text-to-image model: a small Stable Diffusion (CLIPTextModel 4x128 with CLIP's
49408-token vocabulary, UNet2DConditionModel (64, 128, 128), AutoencoderKL with downscale 4),
diffusers layout, float16 safetensors. It makes 64x64 pictures (16x16x4 latents) of Noto emoji
subjects ("an emoji of a red apple", "a smiling face with sunglasses") and of coloured shapes
placed by words ("a red circle above a blue square").

Trained from scratch by tools/train_default/. Training state ({date}):
UNet + text encoder {status} ({unet_step} steps x batch = {samples} samples; {wts} weights, EMA decay {ema}).{resumed}
VAE {vae_step} steps (complete), scaling_factor {sf:.4f}. Seed {seed}; dataset sha256 {dsha}...
Details in training_state.json; `tools/train_default/train.py unet --init-from <this folder>`
continues the training. Default sampler: DPMSolverMultistepScheduler, {steps} steps, guidance
scale about {guidance}.

## Licence

The weights are a work derived from the Noto Emoji images, which are licensed under the Apache
License 2.0 (https://github.com/googlefonts/noto-emoji), obtained from the npm package
{npm} (sha256 of the .tgz {sha}; its metadata, emoji.json, is MIT, Copyright (c) 2013 Cal
Henderson). The weights are distributed under the Apache License 2.0: see LICENSE.
tokenizer/ is OpenAI CLIP's vocabulary, MIT licence, see tokenizer/LICENSE.
"""


# ----------------------------------------------------------------------------------------------
# evaluation: prompts, diffusers reference sampling, adherence score


def cmd_prompts(args):
    meta = json.loads((args.cache / "dataset" / "meta.json").read_text())
    rng = np.random.default_rng(args.seed)
    emoji = [it for it in meta["items"] if it["kind"] == "emoji"]
    pick = rng.choice(len(emoji), size=args.n_emoji, replace=False)
    rows = []
    for i in sorted(pick.tolist()):
        it = emoji[i]
        rows.append({"prompt": it["captions"][2], "kind": "emoji", "emoji": it["label"],
                     "subject": it["subject"], "subcategory": it["subcategory"]})
    cols, shs = meta["colours"], meta["shapes"]
    for _ in range(args.n_shapes):
        layout = ["vertical", "horizontal"][int(rng.integers(2))]
        ca, cb = rng.choice(len(cols), 2, replace=False).tolist()
        sa, sb = rng.choice(len(shs), 2, replace=True).tolist()
        rel = "above" if layout == "vertical" else "to the left of"
        a_ = lambda c, s: ("an " if cols[c][0] in "aeiou" else "a ") + f"{cols[c]} {shs[s]}"
        rows.append({"prompt": f"{a_(ca, sa)} {rel} {a_(cb, sb)}", "kind": "shapes", "layout": layout,
                     "colour_a": ca, "shape_a": sa, "colour_b": cb, "shape_b": sb})
    p = args.prompts
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rows, indent=1) + "\n")
    # the same prompts, one per line, for `stipple generate --prompts-file` (writes DIR/0000.png ...)
    p.with_suffix(".txt").write_text("".join(r["prompt"] + "\n" for r in rows))
    print(f"wrote {p} and {p.with_suffix('.txt')}: {len(rows)} prompts ({args.n_emoji} emoji, "
          f"{args.n_shapes} shapes); image i of a run must be named {{i:04d}}.png")


def cmd_grid(args):
    """A captioned contact sheet of DIR/0000.png ... (prompt i under image i), for README."""
    from PIL import Image, ImageDraw, ImageFont
    import textwrap
    prompts = [l.strip() for l in args.prompts.read_text().splitlines()
               if l.strip() and not l.strip().startswith("#")]
    if args.limit:
        prompts = prompts[: args.limit]
    cols = min(args.cols, len(prompts))
    rows = (len(prompts) + cols - 1) // cols
    side, text_h, pad = 64 * args.scale, 34, 6
    font = ImageFont.load_default(size=11)
    sheet = Image.new("RGB", (cols * (side + pad) + pad, rows * (side + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, prompt in enumerate(prompts):
        path = args.images / f"{i:04d}.png"
        if not path.exists():
            sys.exit(f"missing {path}: generate it with stipple generate --prompts-file {args.prompts}")
        im = Image.open(path).convert("RGB").resize((side, side), Image.NEAREST)
        x, y = pad + (i % cols) * (side + pad), pad + (i // cols) * (side + text_h + pad)
        sheet.paste(im, (x, y))
        chars = max(8, int(side / 5.6))
        lines = textwrap.wrap(prompt, chars)[:3]
        draw.multiline_text((x, y + side + 1), "\n".join(lines), fill="black", font=font, spacing=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}: {len(prompts)} images, {args.out.stat().st_size / 1024:.0f} KB")


def cmd_sample(args):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(str(args.model), torch_dtype=torch.float32,
                                                   safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    rows = json.loads(args.prompts.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(rows[: args.limit or None]):
        g = torch.Generator().manual_seed(args.seed + i)
        im = pipe(r["prompt"], height=64, width=64, num_inference_steps=args.infer_steps,
                  guidance_scale=args.guidance, generator=g).images[0]
        im.save(args.out / f"{i:04d}.png")
    print(f"wrote {min(len(rows), args.limit or len(rows))} images to {args.out}")


def score(net, meta, rows, images):
    """Per row: 1 if the image is classified as the row's subject (emoji: top-1 class; shapes:
    layout, both colours and both shapes), plus emoji top-5 and subcategory hits."""
    lay = meta["layouts"]
    subcat = torch.tensor([meta["subcategories"].index(it["subcategory"])
                           for it in meta["items"] if it["kind"] == "emoji"])
    with torch.no_grad():
        out = net(images)
    res = []
    for i, r in enumerate(rows):
        if r["kind"] == "emoji":
            top5 = out["emoji"][i].topk(5).indices
            res.append(dict(kind="emoji", top1=int(top5[0] == r["emoji"]), top5=int(r["emoji"] in top5.tolist()),
                            subcat=int(subcat[top5[0]] == subcat[r["emoji"]])))
        else:
            ok = (out["layout"][i].argmax() == lay.index(r["layout"]) and out["col_a"][i].argmax() == r["colour_a"]
                  and out["col_b"][i].argmax() == r["colour_b"] and out["shape_a"][i].argmax() == r["shape_a"]
                  and out["shape_b"][i].argmax() == r["shape_b"])
            cols = int(out["col_a"][i].argmax() == r["colour_a"]) + int(out["col_b"][i].argmax() == r["colour_b"])
            res.append(dict(kind="shapes", top1=int(ok), colours=cols / 2))
    return res


def summarise(res):
    e = [r for r in res if r["kind"] == "emoji"]
    s = [r for r in res if r["kind"] == "shapes"]
    m = lambda rs, k: float(np.mean([r[k] for r in rs])) if rs else None
    return dict(emoji_n=len(e), emoji_top1=m(e, "top1"), emoji_top5=m(e, "top5"), emoji_subcategory=m(e, "subcat"),
                shapes_n=len(s), shapes_all_correct=m(s, "top1"), shapes_colours=m(s, "colours"),
                overall=m(res, "top1"))


def cmd_eval(args):
    from PIL import Image
    meta = json.loads((args.cache / "dataset" / "meta.json").read_text())
    rows = json.loads(args.prompts.read_text())
    net = make_classifier(meta)
    if args.classifier:
        from safetensors.torch import load_file
        net.load_state_dict({k: (v.float() if v.is_floating_point() else v)
                             for k, v in load_file(str(args.classifier)).items()})
    else:
        net.load_state_dict(torch.load(args.cache / "runs" / ("classifier" + args.tag) / "ckpt.pt",
                                       map_location="cpu", weights_only=False)["model"])
    net.eval()
    keep, ims = [], []
    if args.images == Path("real"):  # upper bound: the real images of the prompts' subjects
        sys.path.insert(0, str(HERE))
        from prepare_data import draw_shape, SIZE
        from PIL import ImageDraw
        emoji_imgs = np.load(args.cache / "dataset" / "images.npy", mmap_mode="r")
        for r in rows:
            if r["kind"] == "emoji":
                ims.append(np.asarray(emoji_imgs[r["emoji"]]))
            else:
                im = Image.new("RGB", (SIZE * 4, SIZE * 4), (255, 255, 255))
                d = ImageDraw.Draw(im)
                (xa, ya), (xb, yb) = ((32, 17), (32, 47)) if r["layout"] == "vertical" else ((17, 32), (47, 32))
                draw_shape(d, meta["shapes"][r["shape_a"]], meta["colours"][r["colour_a"]], xa, ya, 12, 4)
                draw_shape(d, meta["shapes"][r["shape_b"]], meta["colours"][r["colour_b"]], xb, yb, 12, 4)
                ims.append(np.asarray(im.resize((SIZE, SIZE), Image.BOX)))
            keep.append(r)
    for i, r in enumerate(rows if not keep else []):
        p = args.images / f"{i:04d}.png"
        if p.exists():
            im = Image.open(p)
            # stipple's PNGs carry A1111 `parameters` (prompt on the first line): catch a folder
            # made from another prompt list or order
            made_for = im.info.get("parameters", "").split("\n")[0]
            if made_for and made_for != r["prompt"]:
                sys.exit(f"{p} was generated for {made_for!r}, but prompt {i} of {args.prompts} is "
                         f"{r['prompt']!r}: generate with --prompts-file {args.prompts.with_suffix('.txt')}")
            im = im.convert("RGB")
            if im.size != (64, 64):
                im = im.resize((64, 64), Image.BOX)
            ims.append(np.asarray(im)); keep.append(r)
    if not ims:
        sys.exit(f"no images {args.images}/0000.png ...")
    x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 127.5 - 1
    real = summarise(score(net, meta, keep, x))
    # chance baseline: each image scored against another prompt of the same kind (a derangement),
    # i.e. images generated for a random caption instead of the one asked for
    rng = np.random.default_rng(args.seed)
    base = []
    for rep in range(args.baseline_reps):
        perm = np.arange(len(keep))
        for kind in ("emoji", "shapes"):
            ix = np.array([i for i, r in enumerate(keep) if r["kind"] == kind])
            if len(ix) > 1:
                order = rng.permutation(ix)  # cyclic shift of a random order: no fixed point
                perm[order] = np.roll(order, 1)
        base.append(summarise(score(net, meta, [keep[j] for j in perm], x)))
    baseline = {k: (float(np.mean([b[k] for b in base])) if base[0][k] is not None else None) for k in base[0]}
    report = {"images": str(args.images), "n": len(keep), "adherence": real, "random_caption_baseline": baseline}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, steps, batch, lr, save_every=200):
        p.add_argument("--cache", type=Path, default=Path("/work/data-cache"))
        p.add_argument("--tag", default="", help="suffix of the run folder (e.g. -smoke)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2)
        if steps:
            p.add_argument("--steps", type=int, default=steps, help="total optimizer steps")
            p.add_argument("--batch", type=int, default=batch)
            p.add_argument("--lr", type=float, default=lr)
            p.add_argument("--save-every", type=int, default=save_every)
            p.add_argument("--log-every", type=int, default=20)
            p.add_argument("--subset", type=int, default=0, help="use only the first N emoji and N shapes")
            p.add_argument("--emoji-frac", type=float, default=0.6, help="fraction of each batch from emoji")
            p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
            p.add_argument("--rewarm", type=int, default=200,
                           help="after --init-from (no optimizer state): LR ramp-up steps")
        return p

    p = common(sub.add_parser("vae", help="train the AutoencoderKL, then encode the dataset"), 4000, 16, 4e-4)
    p.add_argument("--kl", type=float, default=1e-4)
    p.add_argument("--sharp", type=float, default=0.5)
    p.add_argument("--crop", type=int, default=32, help="train on random CROPxCROP crops (0: whole 64x64)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="exported diffusers folder: its VAE when there is no local checkpoint (then encode)")
    p = common(sub.add_parser("unet", help="train text encoder + UNet (DDPM, epsilon)"), 6400, 32, 3e-4)
    p.add_argument("--cfg-drop", type=float, default=0.1)
    p.add_argument("--min-snr", type=float, default=5.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--init-from", type=Path, default=None,
                   help="exported diffusers folder to continue from when there is no (newer) local checkpoint")
    p = common(sub.add_parser("classifier", help="CNN on real images only (adherence metric)"), 1500, 64, 1e-3)
    p.add_argument("--init-from", type=Path, default=None, help="a classifier.safetensors of a finished run")
    p = common(sub.add_parser("export", help="write weights/NAME in diffusers layout, fp16"), 0, 0, 0)
    p.add_argument("--name", default="stipple-emoji-64")
    p.add_argument("--out", type=Path, default=None, help="default: weights/NAME in the repository")
    p.add_argument("--no-ema", action="store_true")
    p = common(sub.add_parser("prompts", help="write the evaluation prompts"), 0, 0, 0)
    p.add_argument("--prompts", type=Path, default=EVAL_PROMPTS, help="evaluation prompts (.json; .txt beside it)")
    p.add_argument("--n-emoji", type=int, default=64)
    p.add_argument("--n-shapes", type=int, default=32)
    p = common(sub.add_parser("sample", help="reference images with diffusers for the eval prompts"), 0, 0, 0)
    p.add_argument("--prompts", type=Path, default=EVAL_PROMPTS, help="evaluation prompts (.json; .txt beside it)")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--infer-steps", type=int, default=SAMPLER_STEPS)
    p.add_argument("--guidance", type=float, default=GUIDANCE)
    p = common(sub.add_parser("grid", help="captioned grid of DIR/0000.png ... (README)"), 0, 0, 0)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--prompts", type=Path, required=True, help="the prompts file the images were made from")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--scale", type=int, default=2, help="pixel repeat of the 64x64 images")
    p.add_argument("--limit", type=int, default=0)
    p = common(sub.add_parser("eval", help="prompt adherence of generated images + chance baseline"), 0, 0, 0)
    p.add_argument("--prompts", type=Path, default=EVAL_PROMPTS, help="evaluation prompts (.json; .txt beside it)")
    p.add_argument("--images", type=Path, required=True, help="folder with 0000.png ... for --prompts; 'real': the real images (upper bound)")
    p.add_argument("--baseline-reps", type=int, default=20)
    p.add_argument("--classifier", type=Path, default=EVAL_CLASSIFIER if EVAL_CLASSIFIER.exists() else None,
                   help="classifier.safetensors (default: the committed eval/classifier.safetensors, else the "
                        "classifier run's ckpt.pt)")
    p.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    {"vae": cmd_vae, "unet": cmd_unet, "classifier": cmd_classifier, "export": cmd_export,
     "prompts": cmd_prompts, "sample": cmd_sample, "eval": cmd_eval, "grid": cmd_grid}[args.cmd](args)


if __name__ == "__main__":
    main()
