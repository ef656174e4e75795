#!/usr/bin/env python3
"""Build the training set of stipple's default model: Noto emoji sprites + procedural shapes.

Versions: Python 3.11, numpy==2.4.6, pillow==13.0.0 (the venv of tools/golden plus nothing new);
npm (any recent) to fetch the sprites. Deterministic: fixed seed, a rerun writes identical arrays.

  /work/pyenv/bin/python tools/train_default/prepare_data.py --cache /work/data-cache

What it does
  1. `npm pack emoji-datasource-google@16.0.0` into CACHE (skipped when the .tgz is there) and
     unpacks it to CACHE/emoji-datasource-google-16.0.0/. The package has one 64x64 RGBA PNG per
     emoji under package/img/google/64/ (named by emoji.json's `image`) and the metadata in
     package/emoji.json (name, short_names, category, subcategory, skin_variations).
  2. Emoji set: every entry of emoji.json except
       - category "Flags" (270): the Noto flag images come from a different source (region-flags,
         public domain, not the Apache-2.0 artwork), and a country name says nothing visual;
       - category "Component" (5): skin-tone swatches and hair-style fragments, not pictures;
       - the 12 "SQUARED CJK UNIFIED IDEOGRAPH-xxxx" signs: their only name is a code point;
       - skin-tone variants (skin_variations, ~1900 more images): near-duplicates of the default
         yellow figure that would triple the weight of "People & Body"; only the default is kept.
     Each sprite is composited onto white (alpha over 255) and stored as uint8 RGB.
     Subjects (natural phrases) come from the Unicode name ("MAN: RED HAIR" -> "man with red
     hair", "FACE WITH TEARS OF JOY" -> "face with tears of joy") and from the short names
     ("joy", "red_haired_man" -> "red haired man"); short names with digits ("tiger2", "+1",
     "clock130") are dropped. Captions = templates over subjects ("an emoji of a red apple",
     "a red apple", "red apple emoji", "a picture of a red apple", ...). Class label = index of
     the emoji (one class per emoji), plus its subcategory for a coarse score.
  3. Shapes set (procedural, --shapes N images, default 12000): one or two flat shapes on white,
     10 colours x 6 shapes, two-shape images stacked vertically or side by side; captions name
     colour, shape and position ("a red circle above a blue square", equally "a blue square below
     a red circle"). Labels for the classifier: layout (single/vertical/horizontal), colour and
     shape of object a (top or left) and b (bottom or right; -1 when single). Drawn at 4x and
     box-downsampled (anti-aliased edges like the emoji).

Writes CACHE/dataset/: images.npy (N, 64, 64, 3) uint8 (emoji first, then shapes) and
meta.json (per image: kind, captions, labels; plus class names, colour/shape vocabularies and
the source package's version and sha256). Prints the counts.
"""

import argparse
import hashlib
import json
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PKG = "emoji-datasource-google"
PKG_VERSION = "16.0.0"
SIZE = 64

COLOURS = {  # name -> sRGB
    "red": (220, 38, 38),
    "orange": (245, 140, 30),
    "yellow": (245, 210, 35),
    "green": (40, 165, 60),
    "blue": (35, 85, 225),
    "purple": (135, 55, 190),
    "pink": (245, 125, 185),
    "brown": (125, 75, 35),
    "black": (25, 25, 25),
    "gray": (135, 135, 135),
}
SHAPES = ["circle", "square", "triangle", "star", "heart", "diamond"]
RELATIONS = {"vertical": ("above", "below"), "horizontal": ("to the left of", "to the right of")}


# ----------------------------------------------------------------------------------------------
# emoji


def fetch(cache: Path) -> Path:
    tgz = cache / f"{PKG}-{PKG_VERSION}.tgz"
    if not tgz.exists():
        subprocess.run(["npm", "pack", f"{PKG}@{PKG_VERSION}"], cwd=cache, check=True)
    out = cache / f"{PKG}-{PKG_VERSION}"
    if not (out / "package" / "emoji.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tgz) as t:
            t.extractall(out, filter="data")
    return tgz


def article(p: str) -> str:
    """'a red apple', 'an umbrella', 'japanese dolls' (plural-looking: no article)."""
    last = p.split()[-1]
    if last.endswith("s") and not last.endswith(("ss", "us", "is", "ous")) and len(last) > 3:
        return p
    return ("an " if p[0] in "aeiou" else "a ") + p


def name_subject(name: str) -> str:
    n = name.lower().replace("’", "'")
    if ":" in n:  # "man: red hair" -> "man with red hair"; "family: man, woman, boy"
        head, tail = (s.strip() for s in n.split(":", 1))
        parts = [s.strip() for s in tail.split(",")]
        tail = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        n = f"{head} {tail}" if head == "keycap" else f"{head} with {tail}"
    n = re.sub(r"\s+", " ", n.replace("-", " ")).strip()
    return n


def short_subject(s: str):
    if re.search(r"[0-9+]", s) or len(s) < 3:
        return None
    return re.sub(r"\s+", " ", s.replace("_", " ").replace("-", " ")).strip()


EMOJI_TEMPLATES = [
    "{a}",
    "{p}",
    "an emoji of {a}",
    "{p} emoji",
    "a picture of {a}",
    "an icon of {a}",
    "{a} on a white background",
    "a cartoon of {a}",
]


def emoji_set(pkg_dir: Path):
    entries = json.loads((pkg_dir / "emoji.json").read_text())
    imgdir = pkg_dir / "img" / "google" / "64"
    images, metas, dropped = [], [], {"Flags": 0, "Component": 0, "cjk": 0, "no_image": 0}
    n_skin = 0
    for e in sorted(entries, key=lambda e: e["sort_order"]):
        n_skin += len(e.get("skin_variations") or {})
        if e["category"] in ("Flags", "Component"):
            dropped[e["category"]] += 1
            continue
        if "CJK UNIFIED IDEOGRAPH" in e["name"]:
            dropped["cjk"] += 1
            continue
        path = imgdir / e["image"]
        if not e.get("has_img_google") or not path.exists():
            dropped["no_image"] += 1
            continue
        rgba = np.asarray(Image.open(path).convert("RGBA").resize((SIZE, SIZE), Image.LANCZOS))
        a = rgba[..., 3:4].astype(np.float32) / 255.0
        rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
        images.append(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
        subjects = [name_subject(e["name"])]
        for s in e["short_names"]:
            s = short_subject(s)
            if s and s not in subjects:
                subjects.append(s)
        captions = []
        for p in subjects:
            for t in EMOJI_TEMPLATES:
                c = t.format(p=p, a=article(p))
                if c not in captions:
                    captions.append(c)
        metas.append({
            "kind": "emoji",
            "subject": subjects[0],
            "subjects": subjects,
            "captions": captions,
            "unified": e["unified"],
            "category": e["category"],
            "subcategory": e["subcategory"],
        })
    return images, metas, dropped, n_skin


# ----------------------------------------------------------------------------------------------
# shapes


def shape_polygon(shape, cx, cy, r):
    if shape == "square":
        r *= 0.86
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    if shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            ang = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rr * np.cos(ang), cy + 0.08 * r + rr * np.sin(ang)))
        return pts
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        s = r / 16.5
        return list(zip(cx + s * x, cy + s * (y + 1.5)))
    raise ValueError(shape)


def draw_shape(d, shape, colour, cx, cy, r, scale):
    fill = COLOURS[colour]
    cx, cy, r = cx * scale, cy * scale, r * scale
    if shape == "circle":
        d.ellipse([cx - r * 0.92, cy - r * 0.92, cx + r * 0.92, cy + r * 0.92], fill=fill)
    else:
        d.polygon(shape_polygon(shape, cx, cy, r), fill=fill)


def shapes_set(n, rng):
    images, metas = [], []
    cols, shs = list(COLOURS), SHAPES
    ss = 4
    for _ in range(n):
        im = Image.new("RGB", (SIZE * ss, SIZE * ss), (255, 255, 255))
        d = ImageDraw.Draw(im)
        u = rng.random()
        ca, sa = int(rng.integers(len(cols))), int(rng.integers(len(shs)))
        if u < 0.25:
            layout = "single"
            r = rng.uniform(16, 26)
            cx, cy = 32 + rng.uniform(-4, 4), 32 + rng.uniform(-4, 4)
            draw_shape(d, shs[sa], cols[ca], cx, cy, r, ss)
            cb = sb = -1
            p = f"{cols[ca]} {shs[sa]}"
            captions = [article(p), p, f"{article(p)} on a white background", f"a picture of {article(p)}"]
        else:
            layout = "vertical" if u < 0.625 else "horizontal"
            while True:
                cb, sb = int(rng.integers(len(cols))), int(rng.integers(len(shs)))
                if (cb, sb) != (ca, sa):
                    break
            r = rng.uniform(10, 14)
            off = rng.uniform(14, 17)
            jit = rng.uniform(-5, 5, size=2)
            c0 = 32 + rng.uniform(-3, 3, size=2)
            if layout == "vertical":
                pa, pb = (c0[0] + jit[0], c0[1] - off), (c0[0] + jit[1], c0[1] + off)
            else:
                pa, pb = (c0[0] - off, c0[1] + jit[0]), (c0[0] + off, c0[1] + jit[1])
            draw_shape(d, shs[sa], cols[ca], pa[0], pa[1], r, ss)
            draw_shape(d, shs[sb], cols[cb], pb[0], pb[1], r, ss)
            A, B = article(f"{cols[ca]} {shs[sa]}"), article(f"{cols[cb]} {shs[sb]}")
            rel_ab, rel_ba = RELATIONS[layout]
            captions = [f"{A} {rel_ab} {B}", f"{B} {rel_ba} {A}"]
            captions += [c.removeprefix("a ").removeprefix("an ").replace(" a ", " ").replace(" an ", " ")
                         for c in captions]
        im = im.resize((SIZE, SIZE), Image.BOX)
        images.append(np.asarray(im, dtype=np.uint8))
        metas.append({"kind": "shapes", "captions": captions, "layout": layout,
                      "colour_a": ca, "shape_a": sa, "colour_b": cb, "shape_b": sb})
    return images, metas


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("/work/data-cache"))
    ap.add_argument("--shapes", type=int, default=12000, help="number of procedural shape images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    tgz = fetch(args.cache)
    sha = hashlib.sha256(tgz.read_bytes()).hexdigest()
    pkg_dir = args.cache / f"{PKG}-{PKG_VERSION}" / "package"

    e_img, e_meta, dropped, n_skin = emoji_set(pkg_dir)
    for i, m in enumerate(e_meta):
        m["label"] = i
    rng = np.random.default_rng(args.seed)
    s_img, s_meta = shapes_set(args.shapes, rng)

    out = args.cache / "dataset"
    out.mkdir(exist_ok=True)
    images = np.stack(e_img + s_img)
    np.save(out / "images.npy", images)
    meta = {
        "source": {"npm": f"{PKG}@{PKG_VERSION}", "tgz_sha256": sha,
                   "images_licence": "Apache-2.0 (Noto Emoji, googlefonts/noto-emoji)",
                   "metadata_licence": "MIT (emoji-data, Cal Henderson)"},
        "size": SIZE,
        "n_emoji": len(e_img),
        "n_shapes": len(s_img),
        "emoji_classes": [m["subject"] for m in e_meta],
        "subcategories": sorted({m["subcategory"] for m in e_meta}),
        "colours": list(COLOURS),
        "shapes": SHAPES,
        "layouts": ["single", "vertical", "horizontal"],
        "items": e_meta + s_meta,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=0))
    n_caps = sum(len(m["captions"]) for m in e_meta)
    print(f"source: {tgz.name} sha256 {sha}")
    print(f"emoji.json entries: {len(json.loads((pkg_dir / 'emoji.json').read_text()))}, "
          f"skin-tone variants not used: {n_skin}, dropped: {dropped}")
    print(f"emoji kept: {len(e_img)} images ({len(meta['subcategories'])} subcategories), "
          f"{n_caps} captions ({n_caps / len(e_img):.1f} per image)")
    print(f"shapes: {len(s_img)} images; layouts "
          + ", ".join(f"{k} {sum(m['layout'] == k for m in s_meta)}" for k in meta["layouts"]))
    print(f"wrote {out / 'images.npy'} {images.shape} {images.dtype} "
          f"({images.nbytes / 2**20:.1f} MiB) and {out / 'meta.json'}")
    for m in e_meta[:: max(1, len(e_meta) // 8)][:8]:
        print("  e.g.", m["captions"][2], "|", m["captions"][-1])
    for m in s_meta[:4]:
        print("  e.g.", m["captions"][0])


if __name__ == "__main__":
    main()
