"""Integration tests on a tiny randomly initialised Llama built in the test (seconds each)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from semievol.backends import ModelConfig, Sampling, TrainExample
from semievol.backends.hf import HFBackend, pick_tokens
from semievol.cli import main
from semievol.errors import ModelLoadError
from semievol.tasks import TaskConfig, build_task
from semievol.training import TrainConfig

from .conftest import sentiment_rows


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    # float32 throughout, so padding effects are not hidden in bf16 rounding
    return HFBackend(ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off"))


def prompts(n=7):
    task = build_task(TaskConfig())
    from semievol.data import Example

    rows = sentiment_rows(n)
    exs = [
        Example(r["id"], r["question"] + " extra" * i, json.loads(r["options"]), r["answer"])
        for i, r in enumerate(rows)
    ]
    return task, exs, [task.messages(e) for e in exs]


def test_closed_set_scoring_is_a_distribution_and_batch_independent(backend):
    task, exs, msgs = prompts()
    choices = [task.choices(e) for e in exs]
    batched = backend.score_choices(msgs, choices, progress=False)
    single = [
        backend.score_choices([m], [c], progress=False)[0]
        for m, c in zip(msgs, choices, strict=True)
    ]
    for b, s in zip(batched, single, strict=True):
        assert math.isclose(sum(b), 1.0, abs_tol=1e-5)
        assert b == pytest.approx(s, abs=1e-4)  # left padding must not change the answer


def naive_reply_logprob(backend, prompt_ids, reply_ids):
    ids = torch.tensor([prompt_ids + reply_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(backend.model(input_ids=ids).logits[0].float(), -1)
    start = len(prompt_ids)
    return sum(logprobs[start - 1 + j, t].item() for j, t in enumerate(reply_ids))


def test_sequence_scoring_matches_naive_unbatched_scoring(backend):
    _, _, msgs = prompts(5)
    cands = ["okay", "great review overall", "bad"]
    fast = backend.score_choices(msgs, [cands] * 5, full_sequence=True, progress=False)
    for m, dist in zip(msgs, fast, strict=True):
        text = backend.render(m)
        logps = torch.tensor(
            [
                naive_reply_logprob(backend, backend.tokens(text), backend._reply_tokens(c))
                for c in cands
            ]
        )
        assert dist == pytest.approx(torch.softmax(logps, 0).tolist(), abs=1e-4)


def test_first_token_scoring_matches_naive_next_token_probabilities(backend):
    task, exs, msgs = prompts(3)
    for m, e in zip(msgs, exs, strict=True):
        fast = backend.score_choices([m], [task.choices(e)], progress=False)[0]
        ids = torch.tensor([backend.tokens(backend.render(m))])
        with torch.no_grad():
            logits = backend.model(input_ids=ids).logits[0, -1].float()
        letters = [backend.tokens(backend.render(m) + c)[-1] for c in task.choices(e)]
        assert fast == pytest.approx(torch.softmax(logits[letters], 0).tolist(), abs=1e-4)


def test_generation_returns_token_logprobs_and_is_seeded(backend):
    _, _, msgs = prompts(3)
    greedy = backend.generate(msgs, max_new_tokens=6, progress=False)
    assert greedy == backend.generate(msgs, max_new_tokens=6, progress=False)
    three = [Sampling(temperature=1.0, seed=s) for s in (1, 2, 3)]
    sampled = backend.generate(msgs, samplings=three, max_new_tokens=6, progress=False)
    assert [len(g) for g in sampled] == [3, 3, 3]
    for gens in sampled:
        for g in gens:
            assert 1 <= len(g.token_logprobs) <= 6
            assert all(lp <= 0 for lp in g.token_logprobs)
    assert len({tuple(g.token_ids) for gens in sampled for g in gens}) > 3  # seeds differ
    again = backend.generate(msgs, samplings=three, max_new_tokens=6, progress=False)
    assert [[g.text for g in gs] for gs in sampled] == [[g.text for g in gs] for gs in again]


def hf_greedy(backend, messages, max_new_tokens):
    """Reference: transformers' own generate, one prompt at a time (no padding, no sharing)."""
    ids = torch.tensor([backend.tokens(backend.render(messages))])
    with torch.no_grad():
        out = backend.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=backend.pad_id,
        )
    return out[0, ids.shape[1] :].tolist()


def test_greedy_decoding_matches_transformers_generate(backend):
    # prompts of different lengths in one batch: left padding, the shared prefix's cache and
    # the decode positions must all line up for the tokens to match
    _, _, msgs = prompts(5)
    gens = backend.generate(msgs, max_new_tokens=8, progress=False)
    for m, (g,) in zip(msgs, gens, strict=True):
        assert g.token_ids == hf_greedy(backend, m, 8)[: len(g.token_ids)]
        assert len(g.token_ids) == 8  # random weights: no end-of-turn within 8 tokens


def test_samplings_share_one_pass_yet_match_separate_calls(backend, monkeypatch):
    _, _, msgs = prompts(5)
    samplings = [Sampling(), Sampling(1.0, seed=4), Sampling(0.7, top_p=0.9, seed=5)]
    passes = []
    original = backend._prompt_pass
    monkeypatch.setattr(
        backend,
        "_prompt_pass",
        lambda net, seqs, prefix: passes.append(len(seqs)) or original(net, seqs, prefix),
    )
    together = backend.generate(msgs, samplings=samplings, max_new_tokens=6, progress=False)
    assert sum(passes) == len(msgs)  # each prompt read once for all three samplings
    for j, s in enumerate(samplings):
        alone = backend.generate(msgs, samplings=[s], max_new_tokens=6, progress=False)
        assert [r[j].token_ids for r in together] == [r[0].token_ids for r in alone]
    # a sampled reply depends on its prompt and seed, not on the rest of the batch
    single = [
        backend.generate([m], samplings=samplings, max_new_tokens=6, progress=False)[0]
        for m in msgs
    ]
    assert [[g.token_ids for g in r] for r in single] == [
        [g.token_ids for g in r] for r in together
    ]


def record_merges(monkeypatch) -> list[list[tuple[int, int]]]:
    """Spy on ``kv_cache.merge_rows``: per call, (rows, rows kept) of each part merged."""
    from semievol.backends import kv_cache

    pools: list[list[tuple[int, int]]] = []
    merge = kv_cache.merge_rows

    def recording(parts, room):
        pools.append([(len(m), len(m if k is None else k)) for _, m, k in parts])
        return merge(parts, room)

    monkeypatch.setattr(kv_cache, "merge_rows", recording)
    return pools


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(backend, monkeypatch):
    _, _, msgs = prompts(7)
    free = backend.generate(msgs, max_new_tokens=8, progress=False)
    # make a token that some replies produce early an end-of-turn marker
    stop = free[0][0].token_ids[2]
    monkeypatch.setattr(backend, "_stop_tokens", lambda: {stop, backend.pad_id})
    pools = record_merges(monkeypatch)
    batched = backend.generate(msgs, max_new_tokens=8, progress=False)
    assert len({len(g.token_ids) for (g,) in batched}) > 1  # rows finished at different steps
    assert any(kept < rows for pool in pools for rows, kept in pool)  # and left the batch
    for m, (g,), (f,) in zip(msgs, batched, free, strict=True):
        want = f.token_ids[: f.token_ids.index(stop)] if stop in f.token_ids else f.token_ids
        assert g.token_ids == want
        alone = backend.generate([m], max_new_tokens=8, progress=False)[0][0]
        assert alone.token_ids == g.token_ids
        assert g.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)


def test_a_finished_reply_gets_no_more_tokens_while_it_waits_to_leave(tiny_model_dir, monkeypatch):
    """A row that stops stays in the batch until a quarter of the batch has stopped; the tokens
    picked for it meanwhile must not be appended (they were, before session 11)."""
    b = HFBackend(ModelConfig(name=str(tiny_model_dir), batch_size=64, autocast="off"))
    _, _, msgs = prompts(12)
    stop = next(iter(b._stop_tokens() - {b.pad_id}), b.pad_id)
    original = pick_tokens
    calls = []

    def scripted(logits, samplings, streams):
        picked = original(logits, samplings, streams)
        calls.append(len(picked))
        if len(calls) == 2:
            picked[0] = stop  # the first row ends at its second token, alone
        return picked

    monkeypatch.setattr("semievol.backends.hf.pick_tokens", scripted)
    gens = b.generate(msgs, max_new_tokens=6, progress=False)
    assert calls[2] == 12  # one row of twelve finished: below a quarter, it stays
    lengths = sorted(len(g.token_ids) for (g,) in gens)
    assert lengths == [1] + [6] * 11
    assert all(len(g.token_logprobs) == len(g.token_ids) for (g,) in gens)


def test_continuous_batching_refills_the_pool_with_the_same_replies(tiny_model_dir, monkeypatch):
    """With room for 4 rows, 7 prompts × 2 samplings decode 4 rows at a time; rows that finish
    are replaced by new prompts mid-stream. Replies equal one prompt at a time."""
    b = HFBackend(
        ModelConfig(name=str(tiny_model_dir), batch_size=64, decode_rows=4, autocast="off")
    )
    _, _, msgs = prompts(7)
    samplings = [Sampling(), Sampling(1.0, seed=3)]
    free = b.generate(msgs, samplings=samplings, max_new_tokens=8, progress=False)
    from collections import Counter

    # some rows end early, at different steps: the commonest token after the first two
    stop = Counter(t for r in free for g in r for t in g.token_ids[2:]).most_common(1)[0][0]
    monkeypatch.setattr(b, "_stop_tokens", lambda: {stop, b.pad_id})
    pools = record_merges(monkeypatch)
    steps = []
    forward = b.model.forward
    monkeypatch.setattr(
        b.model, "forward", lambda *a, **k: steps.append(k["input_ids"].shape) or forward(*a, **k)
    )
    together = b.generate(msgs, samplings=samplings, max_new_tokens=8, progress=False)
    assert max(rows for rows, width in steps if width == 1) <= 4  # decode steps: at most 4 rows
    assert any(len(p) == 2 for p in pools)  # new prompts joined rows still writing
    monkeypatch.setattr(b.model, "forward", forward)
    for m, r in zip(msgs, together, strict=True):
        alone = b.generate([m], samplings=samplings, max_new_tokens=8, progress=False)[0]
        assert [g.token_ids for g in r] == [g.token_ids for g in alone]
        for g, a in zip(r, alone, strict=True):
            assert g.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-4)
    assert len({len(g.token_ids) for r in together for g in r}) > 1


def test_caches_that_cannot_be_merged_decode_a_batch_at_a_time(tiny_model_dir, monkeypatch):
    from semievol.backends import kv_cache

    b = HFBackend(
        ModelConfig(name=str(tiny_model_dir), batch_size=2, decode_rows=4, autocast="off")
    )
    _, _, msgs = prompts(5)
    samplings = [Sampling(), Sampling(1.0, seed=3)]
    pooled = b.generate(msgs, samplings=samplings, max_new_tokens=6, progress=False)
    monkeypatch.setattr(kv_cache, "mergeable", lambda cache: False)
    monkeypatch.setattr(kv_cache, "merge_rows", None)  # must not be called
    apart = b.generate(msgs, samplings=samplings, max_new_tokens=6, progress=False)
    assert [[g.token_ids for g in r] for r in apart] == [[g.token_ids for g in r] for r in pooled]


def test_in_place_cache_layers_grow_select_and_crop():
    from transformers.cache_utils import DynamicLayer

    from semievol.backends.kv_cache import InPlaceLayer

    keys, values = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    # 2 positions filled, room for 1 more: the second step runs out of room and doubles it
    layer = InPlaceLayer(keys[:, :, :3].clone(), values[:, :, :3].clone(), 2)
    plain = DynamicLayer()
    plain.update(keys[:, :, :2], values[:, :, :2])
    for _ in range(3):
        new_k, new_v = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
        k, v = layer.update(new_k, new_v)
        want_k, want_v = plain.update(new_k, new_v)
        assert torch.equal(k, want_k) and torch.equal(v, want_v)
    assert layer.get_seq_length() == plain.get_seq_length() == 5
    assert layer._keys.shape[2] > 5  # it grew
    idx = torch.tensor([2, 0])
    layer.batch_select_indices(idx)
    plain.batch_select_indices(idx)
    layer.batch_repeat_interleave(2)
    plain.batch_repeat_interleave(2)
    assert torch.equal(layer.keys, plain.keys) and torch.equal(layer.values, plain.values)
    layer.crop(-2)
    assert torch.equal(layer.keys, plain.keys[:, :, :3])


def test_positions_computed_count_the_work_done(tiny_model_dir, tmp_path):
    task, exs, msgs = prompts(4)
    one_row = HFBackend(
        ModelConfig(name=str(tiny_model_dir), batch_size=1, autocast="off", share_prefix=False)
    )
    lengths = [one_row.prompt_tokens(m) for m in msgs]
    one_row.score_choices(msgs, [task.choices(e) for e in exs], progress=False)
    assert one_row.positions_computed == {"prompt": sum(lengths)}  # no padding, no prefix
    one_row.positions_computed.clear()
    one_row.generate(msgs, samplings=[Sampling(), Sampling(1.0)], max_new_tokens=4, progress=False)
    # one prompt pass for both samplings; 3 decode steps of 2 rows each (random weights do
    # not stop within 4 tokens)
    assert one_row.positions_computed == {"prompt": sum(lengths), "generated": 3 * 2 * len(msgs)}
    shared = HFBackend(ModelConfig(name=str(tiny_model_dir), batch_size=64, autocast="off"))
    shared.score_choices(msgs, [task.choices(e) for e in exs], progress=False)
    prefix = shared._shared_prefix_length([shared.tokens(shared.render(m)) for m in msgs], 10**6)
    width = max(lengths) - prefix
    assert prefix >= 8 and shared.positions_computed == {"prompt": prefix + len(msgs) * width}
    # training shares the prefix too, but it is not scoring or generation: not counted
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    shared.train(train, TrainConfig(epochs=1, batch_size=4), tmp_path / "a", progress=False)
    assert shared.positions_computed == {"prompt": prefix + len(msgs) * width}


def test_top_p_draws_only_from_the_nucleus():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 2))
    nucleus = Sampling(1.0, top_p=0.5)  # 0.4 < 0.5, so the second token is in; 0.7 >= 0.5
    drawn = set()
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        picked = pick_tokens(logits, [Sampling(), nucleus], [None, g])
        assert picked[0].item() == 0  # the greedy row
        drawn.add(picked[1].item())
    assert drawn == {0, 1}
    tiny = Sampling(5.0, top_p=1e-6)  # only the most likely token, however hot
    assert pick_tokens(logits[:1], [tiny], [torch.Generator().manual_seed(0)]).tolist() == [0]


def test_sampled_tokens_follow_the_tempered_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = torch.log(probs.clamp(min=1e-30))[None]
    for temperature in (1.0, 2.0):
        want = probs ** (1 / temperature)
        want = want / want.sum()
        stream = torch.Generator().manual_seed(7)
        counts = torch.zeros(5)
        for _ in range(4000):
            counts[pick_tokens(logits, [Sampling(temperature)], [stream])[0]] += 1
        assert counts[4] == 0  # zero probability: never drawn
        assert (counts / 4000).tolist() == pytest.approx(want.tolist(), abs=0.03)


def test_samplings_are_checked():
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0)


def test_embeddings_are_normalised_and_batch_independent(backend):
    texts = ["a great product", "an awful product overall, really awful", "plain"]
    emb = backend.embed(texts, progress=False)
    assert emb.shape == (3, 64)
    assert torch.allclose(torch.from_numpy(emb).norm(dim=1), torch.ones(3), atol=1e-4)
    one = backend.embed(texts[1:2], progress=False)[0]
    assert (abs(one - emb[1]) < 1e-4).all()


def test_refuses_pickle_only_checkpoints(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        HFBackend(ModelConfig(name=str(tmp_path)))


def test_training_is_deterministic_under_a_seed(tiny_model_dir, tmp_path):
    backend = HFBackend(ModelConfig(name=str(tiny_model_dir)))
    task = build_task(TaskConfig())
    from semievol.data import Example

    exs = [
        TrainExample(
            task.messages(Example(r["id"], r["question"], json.loads(r["options"]))), r["answer"]
        )
        for r in sentiment_rows(12)
    ]
    cfg = TrainConfig(epochs=1, batch_size=4, learning_rate=1e-2, seed=3)
    weights = []
    for i, seed in enumerate([3, 3, 4]):
        cfg.seed = seed
        result = backend.train(exs, cfg, tmp_path / f"a{i}", progress=False)
        weights.append(load_file(result.adapter_dir / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_cli_train_then_eval_learns_the_task(tiny_model_dir, sentiment_data, tmp_path):
    adapter = tmp_path / "sft"
    common = ["--model.name", str(tiny_model_dir), "--data.id_column", "id"]
    rc = main(
        [
            "-q",
            "train",
            *common,
            "--data.labeled",
            str(sentiment_data["labeled"]),
            "--train.output_dir",
            str(adapter),
            "--train.epochs",
            "30",
            "--train.batch_size",
            "6",
            "--train.learning_rate",
            "5e-3",
            "--train.warmup_ratio",
            "0.05",
        ]
    )
    assert rc == 0
    for name in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "semievol_config.yaml",
        "training_log.json",
    ]:
        assert (adapter / name).is_file(), name
    log = json.loads((adapter / "training_log.json").read_text())
    assert log["history"][-1]["loss"] < log["history"][0]["loss"] / 2

    out = tmp_path / "eval"
    rc = main(
        [
            "-q",
            "eval",
            *common,
            "--data.test",
            str(sentiment_data["test"]),
            "--eval.output_dir",
            str(out),
            "--eval.adapters",
            f"[vanilla, {adapter}]",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    vanilla, sft = metrics["vanilla"], metrics[str(adapter)]
    assert sft["accuracy"] >= 0.8 > vanilla["accuracy"]
    assert set(sft["per_class"]) == {"A (negative)", "B (neutral)", "C (positive)"}
    assert sum(sum(row.values()) for row in sft["confusion"].values()) == sft["n"] == 30
    assert (out / "semievol_config.yaml").is_file()
    preds = (out / "predictions_vanilla.jsonl").read_text().splitlines()
    assert len(preds) == 30 and "distribution" in json.loads(preds[0])

    # continuing training from the adapter starts from what it learned
    rc = main(
        [
            "-q",
            "train",
            *common,
            "--data.labeled",
            str(sentiment_data["labeled"]),
            "--model.adapter",
            str(adapter),
            "--train.output_dir",
            str(tmp_path / "more"),
            "--train.epochs",
            "1",
            "--train.learning_rate",
            "1e-4",
        ]
    )
    assert rc == 0
    more = json.loads((tmp_path / "more" / "training_log.json").read_text())
    assert more["history"][0]["loss"] < log["history"][0]["loss"] / 2
    assert more["init_adapter"] == str(adapter)


def test_unreachable_hub_name_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(ModelLoadError, match="cannot load model 'no-such-org/no-such-model'"):
        HFBackend(ModelConfig(name="no-such-org/no-such-model"))


def test_missing_gguf_and_non_adapter_dirs(tmp_path, backend):
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        HFBackend(ModelConfig(name=str(tmp_path / "model.gguf")))
    with pytest.raises(ModelLoadError, match="not a LoRA adapter directory"):
        backend.load_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        backend.load_adapter(tmp_path)


def test_generated_token_logprobs_are_the_models_own(backend):
    _, _, msgs = prompts(2)
    for temperature in (0.0, 1.5):
        two = [Sampling(temperature, seed=0), Sampling(temperature, seed=1)]
        gens = backend.generate(msgs, samplings=two, max_new_tokens=4, progress=False)
        for m, gs in zip(msgs, gens, strict=True):
            for g in gs:
                assert len(g.token_ids) == len(g.token_logprobs) >= 1
                prompt_ids = backend.tokens(backend.render(m))
                expected = naive_reply_logprob(backend, prompt_ids, g.token_ids)
                assert sum(g.token_logprobs) == pytest.approx(expected, abs=1e-3)


def test_validation_split_keeps_the_best_epoch(tiny_model_dir, tmp_path):
    from semievol.data import Example
    from semievol.evaluation import evaluate
    from semievol.training import sft_examples, split_validation, validation_hook

    task = build_task(TaskConfig())
    labeled = [
        Example(r["id"], r["question"], json.loads(r["options"]), r["answer"])
        for r in sentiment_rows(30)
    ]
    train, val = split_validation(labeled, 0.3, seed=0)
    backend = HFBackend(ModelConfig(name=str(tiny_model_dir), autocast="off"))
    hook = validation_hook(backend, task, val)
    seen = []

    def epoch_end(epoch):  # the real hook, plus what the model predicted at that epoch
        seen.append(
            [p for r in evaluate(backend, task, val)[1] for p in r["distribution"].values()]
        )
        return hook(epoch)

    cfg = TrainConfig(
        epochs=10, batch_size=3, learning_rate=5e-3, warmup_ratio=0.0, val_fraction=0.3
    )
    result = backend.train(
        sft_examples(task, train), cfg, tmp_path / "a", epoch_end=epoch_end, progress=False
    )
    accs = [r["val_accuracy"] for r in result.history]
    assert len(accs) == cfg.epochs and all(r["val_n"] == len(val) == 9 for r in result.history)
    kept = accs.index(max(accs)) + 1
    saved = json.loads((tmp_path / "a" / "training_log.json").read_text())
    assert saved["kept_epoch"] == kept != cfg.epochs  # this run peaks before its last epoch

    fresh = HFBackend(ModelConfig(name=str(tiny_model_dir), autocast="off"))
    fresh.use_adapter(fresh.load_adapter(tmp_path / "a"))
    metrics, records = evaluate(fresh, task, val)
    assert metrics["accuracy"] == max(accs)
    reloaded = [p for r in records for p in r["distribution"].values()]
    assert reloaded == pytest.approx(seen[kept - 1], abs=1e-4)
    assert reloaded != pytest.approx(seen[-1], abs=1e-4)


class _Killed(Exception):
    pass


def test_training_resumes_from_its_checkpoint_bit_exactly(tiny_model_dir, tmp_path, monkeypatch):
    """A training killed mid-epoch resumes at its last checkpoint (not step 0) and ends with the
    adapter an uninterrupted run produces, byte for byte, best-epoch choice included."""
    import semievol.backends.hf as hf
    from semievol.data import Example
    from semievol.training import validation_hook

    task = build_task(TaskConfig())
    rows = sentiment_rows(24)
    exs = [
        TrainExample(
            task.messages(Example(r["id"], r["question"], json.loads(r["options"]))), r["answer"]
        )
        for r in rows[:18]
    ]
    val = [
        Example(r["id"], r["question"], json.loads(r["options"]), r["answer"]) for r in rows[18:]
    ]
    cfg = TrainConfig(epochs=3, batch_size=4, learning_rate=1e-2, seed=5, checkpoint_every=2)

    def train(out, backend):
        return backend.train(
            exs, cfg, out, epoch_end=validation_hook(backend, task, val), progress=False
        )

    reference = train(tmp_path / "ref", HFBackend(ModelConfig(name=str(tiny_model_dir))))
    assert not (tmp_path / "ref.checkpoint").exists()  # removed once the adapter is saved

    steps_seen = []
    real_trace = hf.trace

    def killing_trace(event, **fields):
        real_trace(event, **fields)
        if event == "train_step":
            steps_seen.append(fields["step"])
            if fields["step"] == 7:  # epoch 2 (5 steps per epoch), after the step-6 checkpoint
                raise _Killed

    monkeypatch.setattr(hf, "trace", killing_trace)
    with pytest.raises(_Killed):
        train(tmp_path / "resumed", HFBackend(ModelConfig(name=str(tiny_model_dir))))
    assert (tmp_path / "resumed.checkpoint" / "state.json").is_file()
    assert not (tmp_path / "resumed").exists()

    steps_seen.clear()
    monkeypatch.setattr(hf, "trace", real_trace)
    monkeypatch.setattr(
        hf, "trace", lambda e, **f: steps_seen.append(f.get("step")) if e == "train_step" else None
    )
    # A fresh process: new backend, new adapter name, and torch's RNG elsewhere.
    torch.manual_seed(12345)
    resumed = train(tmp_path / "resumed", HFBackend(ModelConfig(name=str(tiny_model_dir))))
    assert steps_seen[0] == 7, "training restarted instead of resuming at step 7"
    assert resumed.steps == reference.steps == 15
    assert [h["val_accuracy"] for h in resumed.history] == [
        h["val_accuracy"] for h in reference.history
    ]
    a = load_file(reference.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_or_foreign_checkpoint_is_not_trusted(
    tiny_model_dir, tmp_path, monkeypatch, caplog
):
    import semievol.backends.hf as hf
    from semievol.data import Example

    task = build_task(TaskConfig())
    exs = [
        TrainExample(
            task.messages(Example(r["id"], r["question"], json.loads(r["options"]))), r["answer"]
        )
        for r in sentiment_rows(8)
    ]
    backend = HFBackend(ModelConfig(name=str(tiny_model_dir)))
    cfg = TrainConfig(epochs=2, batch_size=2, learning_rate=1e-2, seed=1, checkpoint_every=1)
    reference = load_file(
        backend.train(exs, cfg, tmp_path / "ref", progress=False).adapter_dir
        / "adapter_model.safetensors"
    )

    def kill_at_step(event, **fields):
        if event == "train_step" and fields["step"] == 3:
            raise _Killed

    for case, killed_cfg in [
        ("foreign", TrainConfig(**{**vars(cfg), "seed": 2})),
        ("damaged", cfg),
    ]:
        out = tmp_path / case
        monkeypatch.setattr(hf, "trace", kill_at_step)
        with pytest.raises(_Killed):
            backend.train(exs, killed_cfg, out, progress=False)
        monkeypatch.undo()
        state = out.with_name(out.name + ".checkpoint") / "state.safetensors"
        if case == "damaged":
            data = bytearray(state.read_bytes())
            data[-1] ^= 0xFF
            state.write_bytes(bytes(data))
        caplog.clear()
        result = backend.train(exs, cfg, out, progress=False)
        expected = "belongs to another training run" if case == "foreign" else "is damaged"
        assert expected in caplog.text
        weights = load_file(result.adapter_dir / "adapter_model.safetensors")
        assert all(torch.equal(reference[k], weights[k]) for k in reference), case


@pytest.mark.parametrize("full_sequence", [False, True])
def test_shared_prefix_scoring_matches_scoring_every_prompt_whole(
    tiny_model_dir, monkeypatch, full_sequence
):
    """The prefix KV cache is an optimisation only: same distributions as full prompts, for
    first-token scoring and for whole-reply scoring (which continues from the prompts' cache)."""
    task, exs, msgs = prompts(9)
    msgs = [[{"role": "system", "content": "You are a careful expert. " * 4}, *m] for m in msgs]
    choices = [task.choices(e) for e in exs]
    if full_sequence:  # multi-token replies of different lengths
        choices = [["okay", "great review overall", "bad"]] * len(msgs)
    shared = HFBackend(ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off"))
    seqs = [shared.tokens(shared.render(m)) for m in msgs]
    with shared._inference() as net:
        prefix = shared._prefix_cache(net, seqs)
    assert prefix is not None and prefix[0] >= 20  # the system prompt and template are shared
    whole = HFBackend(
        ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off", share_prefix=False)
    )
    after_prefix = []
    forward_after_prefix = HFBackend._forward_after_prefix
    monkeypatch.setattr(
        HFBackend,
        "_forward_after_prefix",
        lambda self, *a, **k: after_prefix.append(1) or forward_after_prefix(self, *a, **k),
    )
    a = shared.score_choices(msgs, choices, full_sequence=full_sequence, progress=False)
    # every batch continued from the prefix: 4 rows are 4 prompts, or 1 prompt x 3 candidates
    batches = 9 if full_sequence else 3
    assert len(after_prefix) == batches
    b = whole.score_choices(msgs, choices, full_sequence=full_sequence, progress=False)
    assert len(after_prefix) == batches
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, abs=1e-5)


def test_frozen_bf16_linears_change_nothing_under_autocast(tiny_model_dir, tmp_path, monkeypatch):
    """Under bf16 autocast the frozen linear weights are stored in bf16 once; autocast would
    have cast them to exactly these values, so scores and trained adapters are identical."""
    task, exs, msgs = prompts(6)
    choices = [task.choices(e) for e in exs]
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    cfg = TrainConfig(epochs=1, batch_size=3, learning_rate=1e-2, lora_dropout=0.1, seed=2)

    def run(backend, name):
        before = backend.score_choices(msgs, choices, progress=False)
        result = backend.train(train, cfg, tmp_path / name, progress=False)
        after = backend.score_choices(msgs, choices, progress=False)
        return before, after, load_file(result.adapter_dir / "adapter_model.safetensors")

    # Unmerged adapters: merging rounds W + BA once more when W is stored in bf16.
    config = ModelConfig(
        name=str(tiny_model_dir), batch_size=4, autocast="on", merge_adapters=False
    )
    stored = HFBackend(config)
    linears = [
        m
        for m in stored.model.modules()
        if isinstance(m, torch.nn.Linear) and m is not stored.model.get_output_embeddings()
    ]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert stored.model.get_output_embeddings().weight.dtype == torch.float32
    got = run(stored, "stored")
    lora = [p for n, p in stored.peft.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora)

    monkeypatch.setattr(HFBackend, "_store_frozen_linears_in_bf16", lambda self: None)
    cast_each_time = HFBackend(config)
    assert all(
        m.weight.dtype == torch.float32
        for m in cast_each_time.model.modules()
        if isinstance(m, torch.nn.Linear)
    )
    want = run(cast_each_time, "cast_each_time")
    assert got[0] == want[0] and got[1] == want[1]
    assert got[2].keys() == want[2].keys()
    assert all(torch.equal(got[2][k], want[2][k]) for k in got[2])
    stored.load_adapter(tmp_path / "cast_each_time")  # a loaded adapter stays float32 too
    assert stored.score_choices(msgs, choices, progress=False) == want[1]


@pytest.mark.parametrize("merge", [True, False])
def test_bf16_norm_outputs_in_inference_change_no_result(
    tiny_model_dir, tmp_path, monkeypatch, merge
):
    """Under autocast, inference rounds each layer's norm outputs to bf16 once instead of in
    every linear that reads them: scores and generations are bit-identical, and training (which
    keeps the per-linear casts) trains the same adapter."""
    task, exs, msgs = prompts(6)
    choices = [task.choices(e) for e in exs]
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    cfg = TrainConfig(epochs=1, batch_size=3, learning_rate=1e-2, lora_dropout=0.1, seed=2)
    config = ModelConfig(
        name=str(tiny_model_dir), batch_size=4, autocast="on", merge_adapters=merge
    )

    def run(backend, name):
        out = [backend.score_choices(msgs, choices, progress=False)]
        result = backend.train(train, cfg, tmp_path / name, progress=False)
        out.append(backend.score_choices(msgs, choices, full_sequence=True, progress=False))
        gens = backend.generate(msgs[:3], max_new_tokens=4, progress=False)
        out.append([g.token_ids for (g,) in gens])
        return out, load_file(result.adapter_dir / "adapter_model.safetensors")

    hooked = HFBackend(config)
    dtypes: dict[bool, set[torch.dtype]] = {True: set(), False: set()}
    norm = hooked.model.model.layers[0].post_attention_layernorm
    norm.register_forward_hook(
        lambda mod, args, out: dtypes[torch.is_grad_enabled()].add(out.dtype)
    )
    got, got_adapter = run(hooked, "hooked")
    assert dtypes == {False: {torch.bfloat16}, True: {torch.float32}}

    monkeypatch.setattr(HFBackend, "_bf16_norm_outputs_in_inference", lambda self: None)
    want, want_adapter = run(HFBackend(config), "plain")
    assert got == want
    assert all(torch.equal(got_adapter[k], want_adapter[k]) for k in want_adapter)


def test_closed_set_head_computes_only_candidate_rows(backend):
    """First-token scoring asks the output head for the candidates' logits only; the
    distribution equals the one from vocabulary-wide logits."""
    task, exs, msgs = prompts(5)
    choices = [task.choices(e) for e in exs]
    head = backend.model.get_output_embeddings()
    widths = []
    handle = head.register_forward_hook(lambda mod, inp, out: widths.append(out.shape[-1]))
    try:
        restricted = backend.score_choices(msgs, choices, progress=False)
        backend._head_patched = False
        full = backend.score_choices(msgs, choices, progress=False)
    finally:
        backend._head_patched = True
        handle.remove()
    vocab = head.weight.shape[0]
    n_candidates = len({backend._reply_tokens(c)[0] for ch in choices for c in ch})
    assert n_candidates in widths and widths[-1] == vocab
    for a, b in zip(restricted, full, strict=True):
        assert a == pytest.approx(b, abs=1e-6)


def test_training_shares_the_prompt_prefix_exactly_without_dropout(tiny_model_dir, tmp_path):
    """The shared prompt prefix goes through the model once per batch: without LoRA dropout,
    the loss, its gradients and the trained adapter match whole-sequence training (float32);
    with dropout it is shared too (one prefix mask per batch)."""
    task, exs, msgs = prompts(6)
    msgs = [[{"role": "system", "content": "You are a careful expert. " * 4}, *m] for m in msgs]
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    cfg = TrainConfig(epochs=2, batch_size=3, learning_rate=1e-2, lora_dropout=0.0, seed=1)

    backend = HFBackend(ModelConfig(name=str(tiny_model_dir), autocast="off"))
    backend._add_fresh_adapter(cfg)
    net = backend.peft
    net.train()
    batch = [backend._encode_train(ex, 1024) for ex in train[:4]]
    assert backend._shared_prefix_length([s for s, _ in batch], 10_000) >= 20
    grads = []
    for share in (True, False):
        net.zero_grad()
        loss = backend._batch_loss(net, batch, share_prefix=share)
        loss.backward()
        grads.append(
            (
                loss.item(),
                {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None},
            )
        )
    (loss_shared, g_shared), (loss_whole, g_whole) = grads
    assert loss_shared == pytest.approx(loss_whole, rel=1e-5)
    assert g_shared.keys() == g_whole.keys() and g_shared
    for k in g_shared:
        assert torch.allclose(g_shared[k], g_whole[k], rtol=1e-4, atol=1e-6), k

    def trained(share_prefix, dropout, name):
        b = HFBackend(
            ModelConfig(name=str(tiny_model_dir), autocast="off", share_prefix=share_prefix)
        )
        calls = []
        original = b._batch_loss
        b._batch_loss = lambda net, batch, share_prefix: (
            calls.append(share_prefix) or original(net, batch, share_prefix=share_prefix)
        )
        cfg.lora_dropout = dropout
        result = b.train(train, cfg, tmp_path / name, progress=False)
        return calls, load_file(result.adapter_dir / "adapter_model.safetensors")

    calls, shared = trained(True, 0.0, "shared")
    assert calls and all(calls)
    calls, whole = trained(False, 0.0, "whole")
    assert calls and not any(calls)
    for k in shared:
        assert torch.allclose(shared[k], whole[k], rtol=1e-3, atol=1e-5), k
    calls, _ = trained(True, 0.1, "dropout")  # one prefix dropout mask per batch
    assert calls and all(calls)


def test_auto_batches_fill_a_measured_token_budget_cached_per_machine(
    tiny_model_dir, tmp_path, monkeypatch
):
    from semievol.backends import hf

    cfg = ModelConfig(name=str(tiny_model_dir), batch_size="auto", cache_dir=str(tmp_path))
    backend = HFBackend(cfg)
    probes = []
    real_probe = hf.probe_token_budget
    monkeypatch.setattr(hf, "probe_token_budget", lambda b: probes.append(1) or real_probe(b))
    budget = backend.batch_token_budget()
    assert probes == [1] and budget % hf.PROBE_LENGTH == 0 and budget >= hf.PROBE_LENGTH
    cached = json.loads((tmp_path / "batch_token_budget.json").read_text())
    assert cached == {hf.budget_cache_key(backend): budget}

    # a second backend on this machine reads the cache instead of measuring again
    assert HFBackend(cfg).batch_token_budget() == budget and probes == [1]
    # batches: every item once, longest first, rows × width within the budget
    lengths = [5, 90, 33, 33, 7, 64, 12, 200, 1, 48] * 3
    for rows in (1, 3):
        backend._token_budget = 150
        batches = backend._batches(lengths, rows_per_item=rows)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        flat = [lengths[i] for b in batches for i in b]
        assert flat == sorted(flat, reverse=True)
        for b in batches:
            assert len(b) == 1 or len(b) * rows * lengths[b[0]] <= 150
        assert any(len(b) > 1 for b in batches)
    # a damaged cache is measured again and rewritten
    (tmp_path / "batch_token_budget.json").write_text("{not json")
    HFBackend(cfg).batch_token_budget()
    assert probes == [1, 1]
    assert json.loads((tmp_path / "batch_token_budget.json").read_text())


def test_probe_stops_when_bigger_batches_stop_helping(tiny_model_dir, tmp_path, monkeypatch):
    """Throughput that peaks at 4 rows gives a 4-row budget; the probe stops after two slower
    sizes instead of trying every size."""
    from semievol.backends import hf

    backend = HFBackend(ModelConfig(name=str(tiny_model_dir), cache_dir=str(tmp_path)))
    seconds_per_pass = {1: 1.0, 2: 1.2, 4: 1.5, 8: 4.0, 16: 9.0, 32: 1e-3, 64: 1e-3}
    clock = {"t": 0.0, "rows": 1}
    real_net = backend.model.forward

    def timed_forward(*args, input_ids, **kwargs):
        clock["rows"] = input_ids.shape[0]
        clock["t"] += seconds_per_pass[input_ids.shape[0]]
        return real_net(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(backend.model, "forward", timed_forward)
    monkeypatch.setattr(hf.time, "perf_counter", lambda: clock["t"])
    budget, rates = hf.probe_token_budget(backend)
    assert budget == 4 * hf.PROBE_LENGTH
    assert list(rates) == [1, 2, 4, 8, 16]  # 32 would be "fastest" but is never reached


def test_cpu_attention_trains_with_eager_for_short_sequences_with_the_same_results(
    tiny_model_dir, monkeypatch
):
    """attention auto on CPU: training uses eager attention for short key sequences and SDPA
    for long ones, inference always SDPA; scores, loss and gradients equal transformers' own
    SDPA path (float32; scores exactly)."""
    from transformers.models.llama import modeling_llama

    from semievol.backends import cpu_attention

    calls = []
    eager = modeling_llama.eager_attention_forward
    monkeypatch.setattr(
        modeling_llama,
        "eager_attention_forward",
        lambda *a, **k: calls.append("eager") or eager(*a, **k),
    )
    task, exs, msgs = prompts(5)
    choices = [task.choices(e) for e in exs]
    cfg = TrainConfig(epochs=1, lora_dropout=0.0, seed=1)

    def run(attention, eager_max_keys):
        monkeypatch.setattr(cpu_attention, "EAGER_MAX_KEYS", eager_max_keys)
        b = HFBackend(ModelConfig(name=str(tiny_model_dir), autocast="off", attention=attention))
        calls.clear()
        scores = b.score_choices(msgs, choices, progress=False)
        scoring_calls = len(calls)
        b._add_fresh_adapter(cfg)
        b.peft.train()
        batch = [
            b._encode_train(TrainExample(m, e.answer), 1024) for m, e in zip(msgs, exs, strict=True)
        ]
        loss = b._batch_loss(b.peft, batch)
        loss.backward()
        grads = {n: p.grad for n, p in b.peft.named_parameters() if p.grad is not None}
        implementation = b.model.config._attn_implementation
        return implementation, scoring_calls, len(calls), scores, loss.item(), grads

    sdpa = run("sdpa", 384)
    assert sdpa[0] == "sdpa" and sdpa[1:3] == (0, 0)
    short = run("auto", 384)
    assert short[0] == cpu_attention.NAME and short[1] == 0 and short[2] > 0
    long = run("auto", 0)  # every call has more keys than that: SDPA with the eager mask
    assert long[0] == cpu_attention.NAME and long[1:3] == (0, 0)
    for got in (short, long):
        assert got[3] == sdpa[3]  # inference is transformers' SDPA path, bit for bit
        assert got[4] == pytest.approx(sdpa[4], rel=1e-5)
        assert got[5].keys() == sdpa[5].keys() and got[5]
        for k in got[5]:
            assert torch.allclose(got[5][k], sdpa[5][k], rtol=1e-4, atol=1e-6), k


def test_unknown_attention_implementation_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="cannot load model"):
        HFBackend(ModelConfig(name=str(tiny_model_dir), attention="no_such_attention"))


def test_probe_takes_the_median_of_interleaved_timings(tiny_model_dir, tmp_path, monkeypatch):
    """One lucky timing does not choose the batch: 8 rows once look fastest, but its median
    over the interleaved rounds is slower than 4 rows'; and a machine that slows down during
    the probe (every later round 1.5x slower) slows every size alike."""
    from semievol.backends import hf

    backend = HFBackend(ModelConfig(name=str(tiny_model_dir), cache_dir=str(tmp_path)))
    base = {1: 1.0, 2: 1.2, 4: 1.5, 8: 4.0, 16: 9.0, 32: 20.0}
    timed = {"t": 0.0, "passes": {}}
    real_net = backend.model.forward

    def timed_forward(*args, input_ids, **kwargs):
        rows = input_ids.shape[0]
        n = timed["passes"][rows] = timed["passes"].get(rows, 0) + 1
        # Round 1 is a warm-up pass and a timed one; later rounds one timed pass each.
        timing = max(0, n - 2)
        seconds = base[rows] * 1.5**timing
        if rows == 8 and n == 2:
            seconds = 0.5  # the lucky first timing
        timed["t"] += seconds
        return real_net(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(backend.model, "forward", timed_forward)
    monkeypatch.setattr(hf.time, "perf_counter", lambda: timed["t"])
    budget, rates = hf.probe_token_budget(backend)
    assert budget == 4 * hf.PROBE_LENGTH
    assert set(rates) == {1, 2, 4, 8, 16, 32}  # 8 was best in round 1; two slower after it
    assert all(n == hf.PROBE_ROUNDS + 1 for n in timed["passes"].values())


def largest_difference(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True))


def test_inference_folds_the_adapter_into_a_copy_of_the_weights(tiny_model_dir, tmp_path):
    """With merge_adapters, inference runs W + scale * B A in the base layers alone: the same
    scores and generations as PEFT's unmerged forward (float32 here, so equal up to summation
    order); the base weights are untouched, training still works, and a changed adapter is
    merged again."""
    task, exs, msgs = prompts(6)
    choices = [task.choices(e) for e in exs]
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    cfg = TrainConfig(epochs=2, batch_size=3, learning_rate=3e-2, lora_dropout=0.0, seed=1)
    merged = HFBackend(ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off"))
    assert merged.config.merge_adapters  # the default
    vanilla = merged.score_choices(msgs, choices, progress=False)
    result = merged.train(train, cfg, tmp_path / "a", progress=False)
    base = {n: p.detach().clone() for n, p in merged.peft.named_parameters() if "lora_" not in n}
    got = merged.score_choices(msgs, choices, progress=False)
    got_text = [g.text for (g,) in merged.generate(msgs, max_new_tokens=4, progress=False)]

    unmerged = HFBackend(
        ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off", merge_adapters=False)
    )
    unmerged.load_adapter(result.adapter_dir)
    want = unmerged.score_choices(msgs, choices, progress=False)
    want_text = [g.text for (g,) in unmerged.generate(msgs, max_new_tokens=4, progress=False)]
    assert largest_difference(got, vanilla) > 1e-3  # the adapter matters
    assert largest_difference(got, want) < 1e-5
    assert got_text == want_text
    # inference swapped the merged copy out again: the model's own weights are unchanged
    assert all(torch.equal(p, base[n]) for n, p in merged.peft.named_parameters() if n in base)
    merged.use_adapter(None)
    assert merged.score_choices(msgs, choices, progress=False) == vanilla

    # Change the adapter in place (as an optimizer step does): the next inference re-merges.
    for backend in (merged, unmerged):
        backend.use_adapter(list(backend.adapters)[-1])
        with torch.no_grad():
            for n, p in backend.peft.named_parameters():
                if "lora_B" in n:
                    p.mul_(-1.0)
    flipped = merged.score_choices(msgs, choices, progress=False)
    assert largest_difference(flipped, got) > 1e-3
    assert largest_difference(flipped, unmerged.score_choices(msgs, choices, progress=False)) < 1e-5


def test_adapters_that_cannot_be_merged_run_unmerged(tiny_model_dir, tmp_path):
    """A DoRA adapter is not a plain weight sum: inference falls back to PEFT's forward."""
    from peft import LoraConfig, get_peft_model

    task, exs, msgs = prompts(4)
    choices = [task.choices(e) for e in exs]
    backend = HFBackend(ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off"))
    torch.manual_seed(0)
    dora = get_peft_model(
        backend.model,
        LoraConfig(
            r=4, target_modules=["q_proj", "v_proj"], use_dora=True, init_lora_weights=False
        ),
    )
    dora.save_pretrained(str(tmp_path / "dora"))
    reference = HFBackend(
        ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off", merge_adapters=False)
    )
    reference.load_adapter(tmp_path / "dora")
    fresh = HFBackend(ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off"))
    fresh.load_adapter(tmp_path / "dora")
    assert fresh.score_choices(msgs, choices, progress=False) == reference.score_choices(
        msgs, choices, progress=False
    )


@pytest.mark.parametrize("merge", [True, False])
def test_scores_are_the_same_when_the_first_call_measures_the_batch_budget(
    tiny_model_dir, tmp_path, merge
):
    """The token budget is measured inside the first scoring call (a nested inference
    context); leaving it must neither re-enable the adapter layers that the outer context
    disabled (Vanilla, or a merged adapter that would then be applied twice) nor put the
    unmerged weights back while the outer context still runs on the merged ones."""
    task, exs, msgs = prompts(6)
    choices = [task.choices(e) for e in exs]
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    cfg = TrainConfig(epochs=1, batch_size=3, learning_rate=3e-2, lora_dropout=0.0, seed=1)
    fixed = HFBackend(
        ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off", merge_adapters=merge)
    )
    vanilla = fixed.score_choices(msgs, choices, progress=False)
    adapter = fixed.train(train, cfg, tmp_path / "a", progress=False).adapter_dir
    tuned = fixed.score_choices(msgs, choices, progress=False)
    for name in ("vanilla", "tuned"):
        auto = HFBackend(
            ModelConfig(
                name=str(tiny_model_dir),
                autocast="off",
                merge_adapters=merge,
                cache_dir=str(tmp_path / f"cache_{name}"),  # nothing measured yet
            )
        )
        auto.load_adapter(adapter)
        if name == "vanilla":
            auto.use_adapter(None)
        first = auto.score_choices(msgs, choices, progress=False)  # measures the budget
        assert (tmp_path / f"cache_{name}" / "batch_token_budget.json").is_file()
        want = vanilla if name == "vanilla" else tuned
        assert largest_difference(first, want) < 1e-5, name
        assert largest_difference(auto.score_choices(msgs, choices, progress=False), want) < 1e-5


@pytest.mark.parametrize("merge", [True, False])
def test_inference_leaves_which_weights_are_trainable_as_it_found_them(
    tiny_model_dir, tmp_path, merge
):
    """PEFT's disable_adapter() marks the active adapter trainable when it exits; inference
    with the adapter merged (and Vanilla inference) goes through it, and must not leave a
    loaded inference-only adapter with trainable weights."""
    task, exs, msgs = prompts(4)
    choices = [task.choices(e) for e in exs]
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    cfg = TrainConfig(epochs=1, batch_size=2, learning_rate=1e-2, lora_dropout=0.0, seed=1)
    trained = HFBackend(ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off"))
    adapter = trained.train(train, cfg, tmp_path / "a", progress=False).adapter_dir

    backend = HFBackend(
        ModelConfig(name=str(tiny_model_dir), batch_size=4, autocast="off", merge_adapters=merge)
    )
    backend.load_adapter(adapter)
    before = {n: p.requires_grad for n, p in backend.peft.named_parameters()}
    assert not any(before.values())  # loaded for inference
    backend.score_choices(msgs, choices, progress=False)
    backend.generate(msgs[:1], max_new_tokens=2, progress=False)
    backend.use_adapter(None)
    backend.score_choices(msgs, choices, progress=False)  # Vanilla
    backend.use_adapter(list(backend.adapters)[-1])
    assert {n: p.requires_grad for n, p in backend.peft.named_parameters()} == before
