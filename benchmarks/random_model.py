"""Write a randomly initialised causal LM of a real architecture to a directory that semievol
loads like any local model (config, tokenizer, safetensors weights). For speed measurements on
machines no weights can reach (the GPU item of issue 5): layer shapes, attention layout and
parameter count of the named model; the vocabulary is the tokenizer's (by default the bundled
SmolLM2's, 49,152 tokens), so the output head is smaller than the original's where that one's
vocabulary is larger. Random weights answer at chance: accuracies mean nothing, speeds do.

    python benchmarks/random_model.py ARCH OUT_DIR [--tokenizer DIR] [--seed N]
    python benchmarks/random_model.py --tokenizer-only OUT_DIR   # just the bundled tokenizer

ARCH: one of PRESETS (shapes from each model's published config.json).

GPU run (the device machine has torch, transformers and peft, but no network and no ../shared):
here, copy what travels into the ignored folder .carry once,

    mkdir -p .carry && cp -r ../shared/data/fpb .carry/fpb
    python benchmarks/random_model.py --tokenizer-only .carry/tokenizer

then run there, carrying .carry:

    PYTHONPATH=src python3 benchmarks/random_model.py llama-3.2-1b /tmp/m --tokenizer .carry/tokenizer
    PYTHONPATH=src python3 benchmarks/perf.py --model /tmp/m --set data.labeled=.carry/fpb/labeled.csv \
        --set data.unlabeled=.carry/fpb/unlabeled.csv --items 256 --naive-max-new-tokens 2 \
        --out $OUT/perf_gpu.json

(--naive-max-new-tokens 2: random weights never emit end-of-turn, so the naive reference would
generate to its limit; the trained SFT labeler on CPU generated 1 token per answer, 1,280 for
the 1,280 generations of perf_s7_256_items.json, then stopped. 2 keeps the comparison to what
a trained labeler does.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# (model_type, config fields): the architecture's published dimensions.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m": (
        "llama",
        dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            rope_theta=100000.0,
            tie_word_embeddings=True,
        ),
    ),
    "llama-3.2-1b": (
        "llama",
        dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            rope_theta=500000.0,
            tie_word_embeddings=True,
        ),
    ),
    "qwen2.5-1.5b": (
        "qwen2",
        dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
        ),
    ),
    "tiny": (  # for tests
        "llama",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        ),
    ),
}


def bundled_tokenizer_dir() -> Path:
    """The bundled SmolLM2's converted directory (converted once and cached)."""
    from semievol.backends import ModelConfig
    from semievol.backends.hf import resolve_model_path

    return Path(resolve_model_path(ModelConfig()))


def write_random_model(arch: str, out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if arch not in PRESETS:
        raise SystemExit(f"error: unknown ARCH {arch!r}; choose one of {', '.join(PRESETS)}")
    model_type, dims = PRESETS[arch]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **dims,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"{arch}: {params / 1e6:.1f} M parameters ({model_type}), written to {out}")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", nargs="?", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: bundled)")
    parser.add_argument("--tokenizer-only", action="store_true", help="write only the tokenizer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tokenizer_dir = args.tokenizer or bundled_tokenizer_dir()
    if args.tokenizer_only:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(args.out)
        print(f"tokenizer of {tokenizer_dir} written to {args.out}")
        return 0
    if args.arch is None:
        parser.error("ARCH is required unless --tokenizer-only")
    write_random_model(args.arch, args.out, tokenizer_dir, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
