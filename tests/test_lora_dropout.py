"""SparseDropout: the LoRA dropout used in training draws the same distribution as nn.Dropout."""

import pytest
import torch

from semievol.backends import ModelConfig, TrainExample
from semievol.backends.hf import HFBackend
from semievol.backends.lora_dropout import SparseDropout, drop_positions
from semievol.training import TrainConfig

from .test_hf_backend import prompts


@pytest.mark.parametrize("p", [0.05, 0.5])
@pytest.mark.parametrize("first_draw", [None, 50])  # 50: most positions come from top-ups
def test_drop_positions_drop_every_element_independently_with_probability_p(p, first_draw):
    torch.manual_seed(0)
    n = 1_000_001
    positions = drop_positions(n, p, first_draw=first_draw)
    assert positions.dtype == torch.int64
    assert positions[0] >= 0 and positions[-1] < n
    assert bool((positions[1:] > positions[:-1]).all())  # sorted, no repeats
    dropped = torch.zeros(n, dtype=torch.float64)
    dropped[positions] = 1
    se = (p * (1 - p) / n) ** 0.5
    assert abs(dropped.mean().item() - p) < 5 * se
    # every region is dropped at rate p (a short draw would leave the end undropped)...
    for part in dropped.chunk(4):
        assert abs(part.mean().item() - p) < 5 * se * 2
    # ...and neighbours are independent
    for gap in (1, 2, 7):
        both = (dropped[:-gap] * dropped[gap:]).mean().item()
        assert abs(both - p * p) < 5 * (p * p * (1 - p * p) / n) ** 0.5 + 1e-4
    assert not torch.equal(drop_positions(n, p), drop_positions(n, p))
    torch.manual_seed(1)
    a = drop_positions(n, p)
    torch.manual_seed(1)
    assert torch.equal(a, drop_positions(n, p))  # the torch generator: seeds reproduce it
    assert drop_positions(0, p).numel() == 0 and drop_positions(10, 0.0).numel() == 0


def test_sparse_dropout_scales_what_it_keeps_and_backpropagates_through_the_mask():
    torch.manual_seed(0)
    x = (torch.rand(64, 48, dtype=torch.float64) + 0.5).requires_grad_()
    drop = SparseDropout(0.25)
    y = drop(x)
    kept = y != 0
    assert 0.6 < kept.double().mean().item() < 0.9
    assert torch.allclose(y[kept], x[kept] / 0.75)
    (y * torch.arange(48.0, dtype=torch.float64)).sum().backward()
    want = kept.double() / 0.75 * torch.arange(48.0, dtype=torch.float64)
    assert torch.allclose(x.grad, want)
    # a non-contiguous input: forward and backward zero the same (logical) elements
    x.grad = None
    y = drop(x.t())
    kept = y != 0
    (y * torch.arange(64.0, dtype=torch.float64)).sum().backward()
    want = kept.double() / 0.75 * torch.arange(64.0, dtype=torch.float64)
    assert torch.allclose(x.grad, want.t())
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        SparseDropout(1.0)


def test_training_replaces_the_trained_adapters_dropout_and_applies_it(tiny_model_dir, tmp_path):
    task, exs, msgs = prompts(6)
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    backend = HFBackend(ModelConfig(name=str(tiny_model_dir), autocast="off"))
    cfg = TrainConfig(epochs=1, batch_size=3, learning_rate=1e-2, lora_dropout=0.1, seed=1)
    result = backend.train(train, cfg, tmp_path / "a", progress=False)
    dropouts = [
        m.lora_dropout[result.adapter_name]
        for m in backend.peft.modules()
        if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)
    ]
    assert dropouts and all(isinstance(d, SparseDropout) and d.p == 0.1 for d in dropouts)

    net = backend.peft
    batch = [backend._encode_train(ex, 1024) for ex in train[:3]]
    net.train()
    with torch.no_grad():
        noisy = [backend._batch_loss(net, batch).item() for _ in range(2)]
    net.eval()
    with torch.no_grad():
        clean = [backend._batch_loss(net, batch).item() for _ in range(2)]
    assert noisy[0] != noisy[1]  # dropout is on in training mode...
    assert clean[0] == clean[1]  # ...and off in eval mode

    cfg = TrainConfig(epochs=1, batch_size=3, learning_rate=1e-2, lora_dropout=0.0, seed=1)
    result = backend.train(train, cfg, tmp_path / "b", progress=False)
    assert not any(
        isinstance(m.lora_dropout[result.adapter_name], SparseDropout)
        for m in backend.peft.modules()
        if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)
    )


def test_under_autocast_lora_inputs_skip_the_float32_round_trip_exactly(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Under bf16 autocast PEFT's cast of LoRA inputs to float32 is turned off (autocast casts
    them back to bf16 right after): without dropout the trained adapter is bit-identical to
    training with the round trip; with dropout the mask is applied in bf16."""
    from safetensors.torch import load_file

    import semievol.backends.hf as hf
    from semievol.backends.lora_dropout import use_sparse_dropout

    task, exs, msgs = prompts(6)
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    cfg = TrainConfig(epochs=1, batch_size=3, learning_rate=1e-2, lora_dropout=0.0, seed=1)

    def trained(name):
        backend = HFBackend(ModelConfig(name=str(tiny_model_dir), autocast="on"))
        result = backend.train(train, cfg, tmp_path / name, progress=False)
        casting = {
            m.cast_input_dtype_enabled
            for m in backend.peft.modules()
            if hasattr(m, "cast_input_dtype_enabled")
        }
        return casting, load_file(result.adapter_dir / "adapter_model.safetensors")

    casting, direct = trained("direct")
    assert casting == {False}
    monkeypatch.setattr(
        hf, "use_sparse_dropout", lambda net, name, autocast: use_sparse_dropout(net, name)
    )
    casting, round_trip = trained("round_trip")
    assert casting == {True}
    assert direct.keys() == round_trip.keys() and direct
    assert all(torch.equal(direct[k], round_trip[k]) for k in direct)

    drop = SparseDropout(0.5)
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = drop(x)
    assert y.dtype == torch.bfloat16
    kept = y != 0
    assert torch.equal(y[kept], (x.bfloat16() * 2)[kept])
