#!/usr/bin/env python3
"""Convert CLIP's BPE vocabulary into HuggingFace tokenizer files for stipple.

What: reads OpenAI CLIP's `bpe_simple_vocab_16e6.txt.gz` and writes, into an output folder
(default `weights/clip_tokenizer/`), the files HuggingFace's `openai/clip-vit-large-patch14`
tokenizer uses and that `stipple::tokenizer::ClipTokenizer::from_dir` reads:

  vocab.json               49408 tokens, id order: 256 byte-unicode chars, the same + "</w>",
                           the 48894 merges joined, "<|startoftext|>", "<|endoftext|>"
  merges.txt               "#version: 0.2" then those 48894 merges, one "a b" per line
  tokenizer_config.json    SD1.x settings (pad "<|endoftext|>", model_max_length 77)
  special_tokens_map.json
  LICENSE                  MIT licence of OpenAI CLIP, with provenance

The construction follows CLIP's `simple_tokenizer.py` (`merges = merges[1:49152-256-2+1]`).

Where the input comes from (this script downloads nothing): the PyPI wheel open-clip-torch==3.3.0
ships the file unchanged from OpenAI's CLIP repository as `open_clip/bpe_simple_vocab_16e6.txt.gz`
(sha256 924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a):

  pip download --no-deps open-clip-torch==3.3.0 -d /tmp/oc
  cd /tmp/oc && unzip -o open_clip-*.whl open_clip/bpe_simple_vocab_16e6.txt.gz
  python3 tools/convert_clip_vocab.py /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz

Licence: the vocabulary is part of OpenAI CLIP (https://github.com/openai/CLIP), MIT licence,
Copyright (c) 2021 OpenAI; the LICENSE file written next to the vocabulary carries it.

Needs only the Python standard library (tested with Python 3.11).
"""

import argparse
import gzip
import hashlib
import json
from pathlib import Path

EXPECTED_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
NUM_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges so the vocabulary is 49408 tokens
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

LICENSE = """\
The files vocab.json and merges.txt in this folder are derived from OpenAI CLIP's
BPE vocabulary `bpe_simple_vocab_16e6.txt.gz` (https://github.com/openai/CLIP, file
clip/bpe_simple_vocab_16e6.txt.gz), taken unchanged from the PyPI wheel
open-clip-torch==3.3.0 (open_clip/bpe_simple_vocab_16e6.txt.gz) and converted by
tools/convert_clip_vocab.py into the HuggingFace tokenizer file layout.

MIT License

Copyright (c) 2021 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def bytes_to_unicode():
    """GPT-2/CLIP's reversible map from the 256 bytes to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the others (controls, space, soft hyphen)
    are shifted to 256+n so no token contains whitespace or control characters.
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def added_token(content):
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bpe_gz", type=Path, help="path to bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "weights" / "clip_tokenizer")
    args = ap.parse_args()

    raw = args.bpe_gz.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != EXPECTED_SHA256:
        raise SystemExit(f"{args.bpe_gz}: sha256 {digest} is not the expected {EXPECTED_SHA256}")

    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    # Line 0 is the file's own header ("#version: 0.2"-like); CLIP uses the next NUM_MERGES.
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    assert len(merges) == NUM_MERGES and all(len(m) == 2 for m in merges)

    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == len(tokens) == 49408, "duplicate tokens in the vocabulary"

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    # Compact, non-ASCII kept as UTF-8, id order: the layout of the HuggingFace hub file.
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")

    special = {
        "bos_token": added_token(BOS),
        "eos_token": added_token(EOS),
        "pad_token": EOS,  # SD1.x pads with <|endoftext|>; SD2.x tokenizers use "!"
        "unk_token": added_token(EOS),
    }
    config = {
        "add_prefix_space": False,
        **{k: ({"__type": "AddedToken", **v} if isinstance(v, dict) else v) for k, v in special.items()},
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": 77,
        "tokenizer_class": "CLIPTokenizer",
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "LICENSE").write_text(LICENSE, encoding="utf-8")
    print(f"wrote {out}: {len(vocab)} tokens, {len(merges)} merges")


if __name__ == "__main__":
    main()
