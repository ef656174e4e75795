#!/usr/bin/env python3
"""Write tests/fixtures/rng/torch_randn.safetensors: torch CPU generator outputs for src/rng.rs.

Versions used for the committed fixture: Python 3.11.7, torch==2.15.0 (CPU generator),
safetensors==0.8.0.

  /work/pyenv/bin/python tools/golden/rng_golden.py          # (re)writes the fixture
  /work/pyenv/bin/python tools/golden/rng_golden.py --check  # recompute, compare with the file

What diffusers' `randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(S))` does on
CPU is `torch.randn(shape, generator=g, dtype=torch.float32)`. torch's float32 normal kernel has
two Box-Muller variants for tensors of >= 16 elements, picked by the CPU capability torch
dispatches to:

  avx2     x86 with AVX2 or AVX-512 (what most Linux/Windows users get): avx_mathfun.h's
           log256_ps / sincos256_ps polynomials. Tensors named `avx2/...`, computed with torch's
           native capability, which must be AVX2 or AVX512 (checked).
  generic  everything else (ARM, e.g. Apple silicon; x86 without AVX2): std::log/cos/sin in
           float. Tensors named `generic/...`, computed in a subprocess with
           ATEN_CPU_CAPABILITY=default.

Tensors < 16 elements use the per-element double path in both, identical everywhere.

Tensor names: `{flavor}/seed{S}/randn{shape}` (full tensor) or, for (1,4,64,64), `.../head`
(first 1024 values), `.../tail` (last 1024) and `.../sum` (float64 sum of all values, shape [1]);
`{flavor}/seed{S}/seq{i}/...` are consecutive draws from one generator (state carries over);
`rand/seed{S}/rand{shape}` are torch.rand outputs. All values float32 unless named `sum`.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "rng" / "torch_randn.safetensors"

SEEDS = [0, 1, 42, 2**32 - 1, 1234567890123]
SHAPES = [(1,), (7,), (15,), (16,), (17,), (31,), (2, 4, 8, 12)]
BIG = (1, 4, 64, 64)
# Consecutive draws: the mt19937 state and the cached second normal of the scalar path carry over.
SEQUENCES = {
    "seq0": [(1, 4, 8, 8), (1, 4, 8, 8)],
    "seq1": [(3,), (3,), (16,), (1,), (20,), (5,)],
}
RAND_SHAPES = [(5,), (100,)]


def shape_name(shape):
    return "x".join(str(s) for s in shape)


def gen(seed):
    return torch.Generator("cpu").manual_seed(seed)


def randn_tensors(flavor):
    """All randn goldens of one flavor, computed by this process's torch."""
    out = {}
    for seed in SEEDS:
        p = f"{flavor}/seed{seed}"
        for shape in SHAPES:
            out[f"{p}/randn{shape_name(shape)}"] = torch.randn(
                shape, generator=gen(seed), dtype=torch.float32
            ).flatten()
        big = torch.randn(BIG, generator=gen(seed), dtype=torch.float32).flatten()
        b = f"{p}/randn{shape_name(BIG)}"
        out[f"{b}/head"] = big[:1024].clone()
        out[f"{b}/tail"] = big[-1024:].clone()
        out[f"{b}/sum"] = big.double().sum().reshape(1)
        for name, shapes in SEQUENCES.items():
            g = gen(seed)
            for i, shape in enumerate(shapes):
                out[f"{p}/{name}/{i}_randn{shape_name(shape)}"] = torch.randn(
                    shape, generator=g, dtype=torch.float32
                ).flatten()
    return out


def rand_tensors():
    out = {}
    for seed in SEEDS:
        for shape in RAND_SHAPES:
            out[f"rand/seed{seed}/rand{shape_name(shape)}"] = torch.rand(
                shape, generator=gen(seed), dtype=torch.float32
            ).flatten()
    return out


def child(path):
    """Runs under ATEN_CPU_CAPABILITY=default: writes the generic flavor."""
    assert torch.backends.cpu.get_cpu_capability() == "DEFAULT", torch.backends.cpu.get_cpu_capability()
    save_file(randn_tensors("generic"), path)


def compute(tmp):
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("AVX2", "AVX512"):
        sys.exit(f"need an x86 CPU with AVX2 for the avx2 flavor; torch reports {cap}")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    subprocess.run([sys.executable, __file__, "--child", str(tmp)], env=env, check=True)
    tensors = randn_tensors("avx2")
    tensors.update(rand_tensors())
    tensors.update(load_file(str(tmp)))
    tmp.unlink()
    return tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--child")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.child:
        child(args.child)
        return
    tmp = OUT.with_suffix(".generic.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tensors = compute(tmp)
    meta = {"torch": torch.__version__, "script": "tools/golden/rng_golden.py"}
    if args.check:
        old = load_file(str(OUT))
        assert sorted(old) == sorted(tensors), "tensor names differ"
        for k, v in tensors.items():
            assert torch.equal(old[k], v), k
        print(f"{OUT}: {len(tensors)} tensors match")
        return
    save_file(dict(sorted(tensors.items())), str(OUT), metadata=meta)
    print(f"wrote {OUT}: {len(tensors)} tensors, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
