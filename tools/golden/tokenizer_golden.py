#!/usr/bin/env python3
"""Write tests/fixtures/tokenizer/clip_ids.json: CLIP token ids from HuggingFace transformers.

The reference tokenizers load the files shipped in weights/clip_tokenizer/ (made by
tools/convert_clip_vocab.py), so the test checks stipple's tokenizer pipeline against
transformers' on the very same vocabulary.

Versions used for the committed fixture:
  write:  Python 3.11.7, transformers==5.24.0, tokenizers==0.23.3
          (transformers 5 only has the tokenizers-backed CLIPTokenizer)
  check:  Python 3.11.7, transformers==4.57.1, ftfy==6.3.1, tokenizers==0.22.2
          (slow, pure-Python CLIPTokenizer with ftfy, and CLIPTokenizerFast)

  python3 -m venv /work/pyenv && /work/pyenv/bin/pip install transformers==5.24.0
  /work/pyenv/bin/python tools/golden/tokenizer_golden.py            # writes the fixture
  python3 -m venv /work/pyenv-tf4 && /work/pyenv-tf4/bin/pip install transformers==4.57.1 ftfy
  /work/pyenv-tf4/bin/python tools/golden/tokenizer_golden.py --check  # slow + fast agree

Each case stores `ids` (BOS + every token + EOS, no truncation: what chunking starts from) and
`input_ids` (padding="max_length", max_length=77, truncation=True: what `encode` returns).
"""

import argparse
import json
from pathlib import Path

import transformers

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "weights" / "clip_tokenizer"
FIXTURE = ROOT / "tests" / "fixtures" / "tokenizer" / "clip_ids.json"

LONG_WORDS = (
    "masterpiece best quality ultra detailed photograph of an old lighthouse on a rocky cliff at "
    "sunset waves crashing seagulls flying golden hour volumetric light dramatic clouds 35mm film "
    "grain sharp focus highly detailed intricate textures warm colors cinematic composition"
).split()
LONG_200 = " ".join(LONG_WORDS[i % len(LONG_WORDS)] for i in range(200))

PROMPTS = [
    "a photo of a cat",
    "",
    "A PHOTO OF A CAT",
    "An Astronaut Riding A Horse On Mars",
    "hello, world!!!",
    "a--b...c?!;:",
    "(masterpiece:1.2), [cat|dog], {best quality}",
    "1234",
    "3.14159 and 42 cats, 1girl 2boys, 8k uhd",
    "café naïve",
    "Crème brûlée à la française, Ærøskøbing, straße",
    "don't",
    "it's the dog's bone; we've, they'll, I'm, you'd, they're",
    "DON'T STOP",
    "  a   photo \t of\n a   cat  ",
    "a\u00a0cat\u3000sitting",
    "🐱",
    "a cat 🐱 on a 🚀 with ❤️ and 👍🏽",
    "一只猫坐在桌子上",
    "東京タワーの夜景",
    "고양이 사진",
    "Привет мир, кошка",
    "नमस्ते दुनिया, สวัสดีครับ",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "hello<|endoftext|>world",
    "<|startoftext|>a dog<|endoftext|>",
    "email@example.com #hashtag $100 50% 3/4 a+b=c ~tilde `code`",
    "\"quoted\" 'single' «guillemets» — em dash … ellipsis",
    "x" * 100,
    LONG_200,
    " ".join(["cat"] * 75),
    " ".join(["cat"] * 76),
    " ".join(["cat"] * 150),
]


def tokenizers_to_check():
    """(name, tokenizer) for every CLIP tokenizer this transformers version has."""
    out = []
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        out.append((f"CLIPTokenizer (transformers {transformers.__version__})", transformers.CLIPTokenizer.from_pretrained(VOCAB)))
    else:
        out.append((f"CLIPTokenizer slow (transformers {transformers.__version__})", transformers.CLIPTokenizer.from_pretrained(VOCAB)))
        out.append((f"CLIPTokenizerFast (transformers {transformers.__version__})", transformers.CLIPTokenizerFast.from_pretrained(VOCAB)))
    return out


def encode(tok, prompt):
    full = tok(prompt, truncation=False)["input_ids"]
    padded = tok(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"]
    return {"prompt": prompt, "ids": list(full), "input_ids": list(padded)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="compare with the committed fixture instead of writing it")
    args = ap.parse_args()

    toks = tokenizers_to_check()
    name0, tok0 = toks[0]
    assert tok0("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    cases = [encode(tok0, p) for p in PROMPTS]
    for name, tok in toks[1:]:
        for c in cases:
            other = encode(tok, c["prompt"])
            if other != c:
                raise SystemExit(f"{name} disagrees with {name0} on {c['prompt']!r}:\n {other}\n {c}")

    if args.check:
        committed = json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]
        bad = [c["prompt"] for c, d in zip(cases, committed) if c != d]
        if bad or len(committed) != len(cases):
            raise SystemExit(f"{name0} disagrees with {FIXTURE} on {bad}")
        print(f"{', '.join(n for n, _ in toks)} agree with {FIXTURE} on {len(cases)} prompts")
        return

    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "generator": f"tools/golden/tokenizer_golden.py with {name0}",
        "vocab": "weights/clip_tokenizer",
        "cases": cases,
    }
    FIXTURE.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE}: {len(cases)} prompts")


if __name__ == "__main__":
    main()
