"""The fused LoRA training forward computes PEFT's function and gradients (backends/lora_fused.py)."""

import pytest
import torch

from semievol.backends import ModelConfig, TrainExample, lora_fused
from semievol.backends.hf import HFBackend
from semievol.backends.lora_dropout import use_bits_dropout
from semievol.training import TrainConfig

from .test_hf_backend import prompts


def lora_backend(tiny_model_dir, autocast, dropout):
    """A backend with a fresh adapter whose B is random (PEFT starts it at 0, which would
    hide half of the update's gradients), and a batch of training rows."""
    backend = HFBackend(ModelConfig(name=str(tiny_model_dir), autocast=autocast))
    name = backend._add_fresh_adapter(TrainConfig(lora_dropout=dropout))
    net = backend.peft
    backend._train_only(name)
    use_bits_dropout(net, name, autocast=backend.autocast)
    torch.manual_seed(0)
    with torch.no_grad():
        for pname, param in net.named_parameters():
            if "lora_B" in pname:
                param.normal_(0, 0.1)
    task, exs, msgs = prompts(6)
    batch = [
        backend._encode_train(TrainExample(m, e.answer), 1024)
        for m, e in zip(msgs, exs, strict=True)
    ]
    return backend, net, batch


def loss_and_grads(backend, net, batch, seed=1):
    net.train()
    net.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = backend._batch_loss(net, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return loss.item(), grads


def count_fused_calls(monkeypatch):
    calls = []
    apply = lora_fused._AddLoraUpdate.apply
    monkeypatch.setattr(lora_fused._AddLoraUpdate, "apply", lambda *a: calls.append(1) or apply(*a))
    return calls


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_loss_and_gradients_match_peft(tiny_model_dir, monkeypatch, dropout):
    backend, net, batch = lora_backend(tiny_model_dir, "off", dropout)
    peft_loss, peft_grads = loss_and_grads(backend, net, batch)
    calls = count_fused_calls(monkeypatch)
    assert lora_fused.use_fused_lora(net) > 0
    fused_loss, fused_grads = loss_and_grads(backend, net, batch)
    n_lora = sum(1 for n, _ in net.named_parameters() if "lora_A" in n)
    assert len(calls) == n_lora  # every adapted layer went through the fused function
    assert peft_grads.keys() == fused_grads.keys() and len(peft_grads) == 2 * n_lora
    assert fused_loss == pytest.approx(peft_loss, rel=1e-5)
    for n, g in peft_grads.items():
        assert (fused_grads[n] - g).abs().max().item() <= 1e-5 * g.abs().max().item(), n
    if dropout:  # the same seed drew the same masks; another seed draws others
        other_loss, _ = loss_and_grads(backend, net, batch, seed=2)
        assert abs(other_loss - fused_loss) > 1e-3 * abs(fused_loss)


def test_under_bf16_autocast_fused_gradients_are_as_close_to_float32_as_peft(
    tiny_model_dir, monkeypatch
):
    """bf16 rounds PEFT's and the fused path differently (PEFT rounds the dropout-scaled
    input, the product and the scaled product to bf16), so they are compared by their error
    against the same step computed in float32 (same weights, same masks)."""
    backend, net, batch = lora_backend(tiny_model_dir, "on", 0.3)
    backend.autocast = False
    with backend._float32_linears():
        ref_loss, ref = loss_and_grads(backend, net, batch)
    backend.autocast = True
    peft_loss, peft_grads = loss_and_grads(backend, net, batch)
    calls = count_fused_calls(monkeypatch)
    lora_fused.use_fused_lora(net)
    fused_loss, fused_grads = loss_and_grads(backend, net, batch)
    assert calls and fused_grads.keys() == peft_grads.keys() == ref.keys()
    assert abs(fused_loss - ref_loss) <= 2 * abs(peft_loss - ref_loss) + 1e-3 * abs(ref_loss)

    def error(grads):
        return sum((grads[n] - g).norm() ** 2 for n, g in ref.items()) ** 0.5

    peft_error, fused_error = error(peft_grads), error(fused_grads)
    assert peft_error > 0  # bf16 does round
    assert fused_error <= 1.5 * peft_error


def test_without_gradients_peft_runs_unchanged(tiny_model_dir, monkeypatch):
    backend, net, batch = lora_backend(tiny_model_dir, "off", 0.3)
    net.eval()
    with torch.no_grad():
        before = backend._batch_loss(net, batch).item()
    calls = count_fused_calls(monkeypatch)
    lora_fused.use_fused_lora(net)
    assert lora_fused.use_fused_lora(net) == 0  # routed once
    with torch.no_grad():
        assert backend._batch_loss(net, batch).item() == before
    assert calls == []


def test_training_uses_it_and_learns_the_same_adapter(tiny_model_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import semievol.backends.hf as hf

    task, exs, msgs = prompts(6)
    train = [TrainExample(m, e.answer) for m, e in zip(msgs, exs, strict=True)]
    cfg = TrainConfig(epochs=2, batch_size=3, learning_rate=1e-2, lora_dropout=0.1, seed=1)

    def trained(name):
        backend = HFBackend(ModelConfig(name=str(tiny_model_dir), autocast="off"))
        result = backend.train(train, cfg, tmp_path / name, progress=False)
        return load_file(result.adapter_dir / "adapter_model.safetensors")

    calls = count_fused_calls(monkeypatch)
    fused = trained("fused")
    assert calls
    monkeypatch.setattr(hf, "use_fused_lora", lambda net: 0)
    plain = trained("plain")
    assert fused.keys() == plain.keys() and fused
    for k in fused:
        # Adam divides by the gradients' size, so rounding differences grow: 1e-4 measured
        assert (fused[k] - plain[k]).abs().max() <= 1e-3 * plain[k].abs().max(), k
