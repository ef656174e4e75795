#!/usr/bin/env python3
"""Write tests/fixtures/full_size/{sd15,sd21,sdxl}.json: every tensor name and shape of the
full-size Stable Diffusion 1.5, 2.1 and SDXL base 1.0 components as diffusers / transformers
build them.

Versions used for the committed fixtures: Python 3.11.7, torch==2.15.0 (CPU), diffusers==0.42.1,
transformers==5.24.0.

  python3 tools/golden/full_size_names_golden.py

The models are built on torch's "meta" device (shapes only, no memory, no download) from the
configs published with runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1
(written out below: only the fields that decide tensor shapes matter here). SD2.1-base, SD2.1-768
and SD-Turbo share the SD2.1 shapes; SDXL-Turbo shares SDXL base's (stabilityai/
stable-diffusion-xl-base-1.0: text_encoder CLIP ViT-L, text_encoder_2 CLIPTextModelWithProjection
OpenCLIP bigG). `stipple init-random` must write exactly these names and
shapes (tests/init_random.rs). Text encoder names carry the `text_model.` prefix, as the Hub's SD
files spell them (transformers 4 layout; transformers 5's state_dict drops the prefix, so it is
added back here); the `position_ids` buffer is not a weight and is left out.

Deterministic: the output depends only on the configs and the library versions.
"""

import json
import os

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

UNET = {
    "sd15": dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=DOWN,
        up_block_types=UP,
        block_out_channels=[320, 640, 1280, 1280],
        layers_per_block=2,
        attention_head_dim=8,
        cross_attention_dim=768,
    ),
    "sd21": dict(
        sample_size=96,
        in_channels=4,
        out_channels=4,
        down_block_types=DOWN,
        up_block_types=UP,
        block_out_channels=[320, 640, 1280, 1280],
        layers_per_block=2,
        attention_head_dim=[5, 10, 20, 20],
        cross_attention_dim=1024,
        use_linear_projection=True,
        upcast_attention=True,
    ),
    "sdxl": dict(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        block_out_channels=[320, 640, 1280],
        layers_per_block=2,
        attention_head_dim=[5, 10, 20],
        cross_attention_dim=2048,
        transformer_layers_per_block=[1, 2, 10],
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ),
}

VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
)

TEXT = {
    "sd15": dict(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
    ),
    "sd21": dict(
        vocab_size=49408,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=23,
        num_attention_heads=16,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=512,
    ),
}
TEXT["sdxl"] = TEXT["sd15"]
TEXT_2 = {
    "sdxl": dict(
        vocab_size=49408,
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=20,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=1280,
    ),
}


def text_listing(module):
    return [
        [n if n.startswith(("text_model.", "text_projection.")) else "text_model." + n, s]
        for n, s in listing(module)
        if not n.endswith("position_ids")
    ]


def listing(module):
    return [[name, list(t.shape)] for name, t in module.state_dict().items()]


def main():
    out_dir = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "full_size")
    os.makedirs(out_dir, exist_ok=True)
    for family in ["sd15", "sd21", "sdxl"]:
        with torch.device("meta"):
            unet = UNet2DConditionModel(**UNET[family])
            vae = AutoencoderKL(**VAE)
            text = CLIPTextModel(CLIPTextConfig(**TEXT[family]))
            text_2 = (
                CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_2[family])) if family in TEXT_2 else None
            )
        doc = {
            "unet": listing(unet),
            "vae": listing(vae),
            "text_encoder": text_listing(text),
        }
        if text_2 is not None:
            doc["text_encoder_2"] = text_listing(text_2)
        path = os.path.join(out_dir, f"{family}.json")
        with open(path, "w") as f:
            # One tensor per line: small diffs when a version changes a name.
            f.write("{\n")
            for i, (component, entries) in enumerate(doc.items()):
                f.write(f'  "{component}": [\n')
                f.write(",\n".join(f"    {json.dumps(e)}" for e in entries))
                f.write("\n  ]" + ("," if i + 1 < len(doc) else "") + "\n")
            f.write("}\n")
        counts = {k: (len(v), sum(int(torch.tensor(s).prod()) for _, s in v)) for k, v in doc.items()}
        print(path, counts)


if __name__ == "__main__":
    main()
