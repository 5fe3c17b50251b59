"""Shared fixtures: a tiny randomly initialised Llama with its own tokenizer, built in seconds."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(autouse=True, scope="session")
def own_semievol_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests write their cache entries (measured batch budgets) into a temporary cache, not the
    user's; converted models are shared with the real cache, so they are converted once."""
    from semievol.backends import ModelConfig
    from semievol.backends.hf import cache_root

    real = cache_root(ModelConfig())
    own = tmp_path_factory.mktemp("semievol-cache")
    (real / "converted").mkdir(parents=True, exist_ok=True)
    (own / "converted").symlink_to(real / "converted", target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEMIEVOL_CACHE", str(own))
        yield own


def write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


SENTIMENT_WORDS = {
    "A": ["awful", "terrible", "bad"],
    "B": ["okay", "plain", "normal"],
    "C": ["great", "superb", "good"],
}


def sentiment_rows(n: int, start: int = 0) -> list[dict]:
    """A tiny 3-class task whose label is given away by one word: learnable in a few steps."""
    rows = []
    for i in range(start, start + n):
        letter = "ABC"[i % 3]
        word = SENTIMENT_WORDS[letter][(i // 3) % 3]
        rows.append(
            {
                "id": f"r{i}",
                "question": f"Review {i}: the product was {word} overall.",
                "options": json.dumps(["negative", "neutral", "positive"]),
                "answer": letter,
            }
        )
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    corpus = [r["question"] for r in sentiment_rows(60)] + [
        "Answer with the letter (A-C) of the correct option only. A. negative B. neutral C. positive",
        "You are a careful expert. Reply with the answer only. user assistant system",
    ]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        tie_word_embeddings=False,
        # At the default 0.02 a 64-wide random model passes almost no context to the last
        # position, and LoRA cannot learn anything but the label prior.
        initializer_range=0.1,
    )
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture
def sentiment_data(tmp_path: Path) -> dict[str, Path]:
    return {
        "labeled": write_csv(tmp_path / "data" / "labeled.csv", sentiment_rows(30)),
        "test": write_csv(tmp_path / "data" / "test.csv", sentiment_rows(30)),
    }
