"""Security defaults: no remote code unless asked, safetensors only, no pickle."""

from __future__ import annotations

import json
import shutil

import pytest

from semievol.backends import ModelConfig
from semievol.backends.hf import HFBackend
from semievol.errors import ModelLoadError

EVIL = """
import pathlib
pathlib.Path(__file__).with_name("EXECUTED").write_text("remote code ran")
from transformers import LlamaConfig, LlamaForCausalLM
class EvilConfig(LlamaConfig):
    model_type = "evil"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
"""


def test_custom_model_code_is_never_run_by_default(tiny_model_dir, tmp_path):
    model = tmp_path / "custom-code-model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config.update(
        model_type="evil",
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
    )
    (model / "config.json").write_text(json.dumps(config))
    (model / "evil.py").write_text(EVIL)
    with pytest.raises(ModelLoadError) as info:
        HFBackend(ModelConfig(name=str(model)))
    assert "trust_remote_code" in str(info.value)
    assert not (model / "EXECUTED").exists()


def test_pickle_adapters_are_refused_with_a_clear_message(tiny_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04 not loaded")
    backend = HFBackend(ModelConfig(name=str(tiny_model_dir)))
    with pytest.raises(ModelLoadError, match=r"found pickle files \['adapter_model.bin'\]"):
        backend.load_adapter(adapter)
