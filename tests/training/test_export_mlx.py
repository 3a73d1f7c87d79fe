"""`mondrian adapters export --format mlx`: mlx-vlm's layout, and a conversion that
round-trips back to the PEFT tensors exactly."""

from __future__ import annotations

import json

import pytest
from training_helpers import make_peft_adapter

from mondrian.errors import InvalidInput
from mondrian.training.export_mlx import (
    BASE_DIR,
    MLX_CONFIG,
    MLX_WEIGHTS,
    check_convertible,
    export_mlx,
    mlx_to_peft,
    peft_to_mlx,
)

pytestmark = [
    pytest.mark.model,
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]


@pytest.fixture(scope="module")
def adapter(tiny_checkpoint_factory, tmp_path_factory):
    return make_peft_adapter(tiny_checkpoint_factory(), tmp_path_factory.mktemp("peft") / "a")


def test_export_round_trips_to_the_peft_tensors_exactly(adapter, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = export_mlx(adapter, tmp_path / "mlx", include_base=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MLX_CONFIG, MLX_WEIGHTS, "mondrian_export.json"]
    )
    peft = load_file(str(adapter / "adapter_model.safetensors"))
    mlx = load_file(str(out / MLX_WEIGHTS))
    back = mlx_to_peft(mlx)
    assert set(back) == set(peft)
    for key, tensor in peft.items():
        assert back[key].dtype == tensor.dtype
        assert torch.equal(back[key], tensor), key


def test_export_uses_mlx_vlm_names_shapes_and_scale(adapter, tmp_path, tiny_checkpoint_factory):
    import torch
    from safetensors.torch import load_file

    out = export_mlx(adapter, tmp_path / "mlx")
    config = json.loads((out / MLX_CONFIG).read_text())
    peft_config = json.loads((adapter / "adapter_config.json").read_text())
    params = config["lora_parameters"]
    assert config["fine_tune_type"] == "lora"
    assert (config["rank"], config["alpha"], config["dropout"]) == (4, 8.0, 0.0)
    assert params["rank"] == peft_config["r"] and params["scale"] == 8.0 / 4
    # 2 decoder layers x 7 linears, named as mlx-vlm's Qwen-VL models name them.
    assert len(params["keys"]) == 14
    assert all(k.startswith("language_model.model.layers.") for k in params["keys"])
    weights = load_file(str(out / MLX_WEIGHTS))
    assert set(weights) == {f"{k}.lora_{ab}" for k in params["keys"] for ab in "ab"}

    # mlx-vlm's LoRALinear: y = linear(x) + scale * (x @ lora_a) @ lora_b. It must add
    # what PEFT adds: scaling * lora_B(lora_A(x)).
    key = "language_model.model.layers.1.mlp.down_proj"
    peft = load_file(str(adapter / "adapter_model.safetensors"))
    a = peft["base_model.model.model.language_model.layers.1.mlp.down_proj.lora_A.weight"]
    b = peft["base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.weight"]
    x = torch.randn(3, a.shape[1])
    peft_delta = (peft_config["lora_alpha"] / peft_config["r"]) * (x @ a.T @ b.T)
    mlx_delta = params["scale"] * (x @ weights[f"{key}.lora_a"] @ weights[f"{key}.lora_b"])
    assert torch.allclose(peft_delta, mlx_delta, atol=1e-6)
    assert weights[f"{key}.lora_a"].shape == (256, 4)  # (in, r): intermediate -> rank


def test_export_writes_a_base_mlx_vlm_reads(adapter, tiny_checkpoint_factory, tmp_path):
    """OUT/base: the local base with the config mlx-vlm reads and the other files shared
    (hard links on one file system); the base itself is left as it was. (That mlx-vlm
    alone loads it runs in tests/test_ecosystem.py, in a fresh interpreter.)"""
    import os
    import stat

    from mondrian.backends.mlx.checkpoint import convert_config

    source = tiny_checkpoint_factory()
    before = {p.name: (p.stat().st_mode, p.read_bytes()) for p in source.iterdir()}
    old = os.umask(0o022)
    try:
        out = export_mlx(adapter, tmp_path / "mlx")
    finally:
        os.umask(old)
    base = out / BASE_DIR
    assert sorted(p.name for p in base.iterdir()) == sorted(before)
    config = json.loads((base / "config.json").read_text())
    assert config == convert_config(json.loads((source / "config.json").read_text()))
    assert config["hidden_size"] == config["text_config"]["hidden_size"]  # flat, as mlx-vlm reads
    for name in set(before) - {"config.json"}:
        assert (base / name).stat().st_ino == (source / name).stat().st_ino, name
    assert {p.name: (p.stat().st_mode, p.read_bytes()) for p in source.iterdir()} == before
    info = json.loads((out / "mondrian_export.json").read_text())
    assert (info["mlx_vlm_model"], info["mlx_vlm_adapter_path"]) == ("base", ".")
    # The export is shared data, readable by a server running as another user.
    for path in (out, base):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    for path in (out / MLX_WEIGHTS, out / MLX_CONFIG, out / "mondrian_export.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((base / "config.json").stat().st_mode) == 0o644


def test_a_hub_base_is_named_not_downloaded(adapter, tmp_path):
    out = export_mlx(adapter, tmp_path / "mlx", base_model="Qwen/Qwen2.5-VL-3B-Instruct")
    assert not (out / BASE_DIR).exists()
    info = json.loads((out / "mondrian_export.json").read_text())
    assert info["mlx_vlm_model"] == info["base_model"] == "Qwen/Qwen2.5-VL-3B-Instruct"


def test_export_refuses_what_mlx_vlm_cannot_express():
    import torch

    base = {"peft_type": "LORA", "r": 4, "lora_alpha": 8}
    for extra, reason in (
        ({"use_dora": True}, "DoRA"),
        ({"rank_pattern": {"q_proj": 8}}, "per-module"),
        ({"bias": "all"}, "biases"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ):
        with pytest.raises(InvalidInput, match=reason):
            check_convertible({**base, **extra})
    vision = {
        "base_model.model.model.visual.blocks.0.mlp.gate_proj.lora_A.weight": torch.zeros(4, 8)
    }
    with pytest.raises(InvalidInput, match="only LoRA on the language model"):
        peft_to_mlx(vision, base)


def test_rslora_scale(adapter):
    _, config = peft_to_mlx(
        {}, {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "use_rslora": True}
    )
    assert config["lora_parameters"]["scale"] == 32 / 4


def test_cli_export(state, settings, adapter, tmp_path, capsys):
    import shutil

    from mondrian.cli.main import main
    from mondrian.training import registry

    staging = registry.new_staging_dir(settings, "ansel")
    shutil.copytree(adapter, staging, dirs_exist_ok=True)
    ref = registry.publish(state, settings, "ansel", staging, "tiny", {})[0].ref
    out = tmp_path / "mlx"
    assert main(["adapters", "export", ref, "--format", "mlx", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    info = json.loads((out / "mondrian_export.json").read_text())
    assert info["adapter"] == ref
    assert main(["adapters", "export", ref, "--format", "mlx", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["adapters", "export", ref, "--format", "mlx", str(out), "--force"]) == 0


def test_mlx_vlm_loads_the_export_and_computes_what_peft_computes(
    adapter, tiny_checkpoint_factory, tmp_path
):
    """mlx-vlm's own loader (`apply_lora_layers`) on the export: every targeted layer
    gets the exported weights (its `load_weights(strict=False)` would silently keep
    random ones under a wrong name), and a LoRA layer's output equals PEFT's."""
    pytest.importorskip("mlx_vlm")
    import mlx.core as mx
    import numpy as np
    import torch
    from mlx_vlm.trainer.peft.lora_layers import LoRALinear
    from mlx_vlm.trainer.peft.utils import apply_lora_layers
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from mondrian.backends.mlx.checkpoint import load_model, prepare_checkpoint

    base = tiny_checkpoint_factory()
    out = export_mlx(adapter, tmp_path / "mlx")
    model = apply_lora_layers(load_model(prepare_checkpoint(base, tmp_path / "cache")), out)
    layers = model.language_model.model.layers
    wrapped = [
        (i, name)
        for i, layer in enumerate(layers)
        for name, module in layer.named_modules()
        if isinstance(module, LoRALinear)
    ]
    assert len(wrapped) == 14

    exported = mx.load(str(out / MLX_WEIGHTS))
    for i, name in wrapped:
        module = dict(layers[i].named_modules())[name]
        key = f"language_model.model.layers.{i}.{name}"
        assert np.array_equal(np.array(module.lora_a), np.array(exported[f"{key}.lora_a"]))
        assert np.array_equal(np.array(module.lora_b), np.array(exported[f"{key}.lora_b"]))

    peft_model = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(base), adapter
    )
    torch_layer = peft_model.base_model.model.model.language_model.layers[1].mlp.down_proj
    mlx_layer = dict(layers[1].named_modules())["mlp.down_proj"]
    mlx_layer.eval()
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    with torch.no_grad():
        expected = torch_layer(torch.from_numpy(x)).numpy()
    got = np.array(mlx_layer(mx.array(x)))
    assert np.allclose(got, expected, atol=1e-4), np.abs(got - expected).max()
