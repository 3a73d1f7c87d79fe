"""`lora` with a real PEFT adapter made here on the tiny model, and the fallback chain
lora -> rag -> baseline when it cannot serve."""

from __future__ import annotations

import json
import shutil

import pytest

from mondrian.analysis import analyze
from mondrian.context import Context
from mondrian.images import read_image_file
from mondrian.portfolio.indexing import index_paths
from mondrian.storage import adapters, advisors
from mondrian.strategies.lora import BASE_POLICY_REASON
from mondrian.strategies.registry import STRATEGIES, Fallback

pytestmark = pytest.mark.model

# LoRA on the language model's linear layers only (docs/ecosystem.md): never the vision tower.
LM_LINEARS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@pytest.fixture(scope="session")
def adapter_dir(tiny_model, backend, tmp_path_factory):
    """A PEFT adapter with random (non-zero) LoRA weights, so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_model), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LM_LINEARS, init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    targeted = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A")]
    assert targeted and all("language_model" in n for n in targeted)
    out = tmp_path_factory.mktemp("adapter") / "ansel-v1"
    peft_model.save_pretrained(str(out), safe_serialization=True)
    (out / "mondrian_adapter.json").write_text(
        json.dumps({"base_model": str(tiny_model), "base_fingerprint": backend.fingerprint})
    )
    assert (out / "adapter_model.safetensors").is_file()
    return out


def _register(db, advisor_id, path, base_model) -> str:
    def register_and_activate(conn):
        version = adapters.register_adapter(conn, advisor_id, path, base_model)
        return adapters.activate(conn, advisor_id, version).ref

    return db.write(register_and_activate)


def _photo(photos_dir, name="chelsea"):
    return read_image_file(photos_dir / f"{name}.jpg")


def test_lora_serves_with_the_active_adapter_loaded_once(
    ctx, ansel, adapter_dir, tiny_model, photos_dir, monkeypatch
):
    ref = _register(ctx.db, ansel.id, adapter_dir, str(tiny_model))
    assert ref == "ansel@v1"
    photo = _photo(photos_dir)

    result = analyze(ctx, ansel, photo, "lora")

    assert result.mode_requested == result.mode_used == "lora"
    assert result.model.adapter == "ansel@v1" and result.model.variant == "fine_tuned"
    assert result.model.engine == "stock"  # the CPU's path, recorded with the result
    assert ctx.backend.adapters().count("ansel@v1") == 1
    assert result.references == []
    baseline = analyze(ctx, ansel, photo, "baseline")
    assert baseline.model.adapter is None
    # The adapter really is applied: its calibrated scores differ from the base model's.
    lora_scores = [d.expected_score for _, d in result.critique.dimensions.items()]
    base_scores = [d.expected_score for _, d in baseline.critique.dimensions.items()]
    assert lora_scores != base_scores

    loads = []
    monkeypatch.setattr(ctx.backend, "load_adapter", lambda *a: loads.append(a))
    again = analyze(ctx, ansel, photo, "lora")
    assert loads == [] and again.model.adapter == "ansel@v1"  # resident: not loaded again


def test_lora_without_adapter_falls_back_to_rag_then_baseline(ctx, ansel, photo_copies, photos_dir):
    photo = _photo(photos_dir)
    with ctx.db.read() as conn:
        assert adapters.get_active(conn, ansel.id) is None

    bare = analyze(ctx, ansel, photo, "lora")  # no adapter, no portfolio

    assert (bare.mode_requested, bare.mode_used) == ("lora", "baseline")
    assert bare.references == [] and bare.model.adapter is None

    index_paths(ctx, ansel, [photo_copies("coffee", "rocket")])
    with_portfolio = analyze(ctx, ansel, photo, "lora")

    assert (with_portfolio.mode_requested, with_portfolio.mode_used) == ("lora", "rag")
    assert len(with_portfolio.references) == 2
    assert with_portfolio.model.adapter is None


def test_fallback_reasons_name_what_is_missing(ctx, ansel):
    strategy, reasons = Fallback(STRATEGIES).choose(ctx, ansel, "lora")
    assert strategy.name == "baseline"
    assert reasons == ["lora: no active adapter", "rag: no indexed portfolio"]
    strategy, reasons = Fallback(STRATEGIES).choose(ctx, ansel, "rag")
    assert (strategy.name, reasons) == ("baseline", ["rag: no indexed portfolio"])


def test_base_model_policy_makes_lora_unavailable(ctx, ansel, adapter_dir, tiny_model, photos_dir):
    _register(ctx.db, ansel.id, adapter_dir, str(tiny_model))
    base_ctx = Context(backend=ctx.backend, db=ctx.db, settings=ctx.settings, variant="base")

    strategy, reasons = Fallback(STRATEGIES).choose(base_ctx, ansel, "lora")

    assert strategy.name == "baseline"
    assert reasons[0] == f"lora: {BASE_POLICY_REASON}"
    tuned_ctx = Context(backend=ctx.backend, db=ctx.db, settings=ctx.settings, variant="fine_tuned")
    assert Fallback(STRATEGIES).choose(tuned_ctx, ansel, "lora")[0].name == "lora"


def test_an_adapter_the_backend_refuses_makes_lora_unavailable(ctx, adapter_dir, tmp_path):
    foreign = tmp_path / "foreign"
    shutil.copytree(adapter_dir, foreign)
    (foreign / "mondrian_adapter.json").write_text(
        json.dumps({"base_model": "someone/else", "base_fingerprint": "0123456789abcdef"})
    )
    # Another advisor: the session's backend may hold an `ansel@v1` from another test.
    with ctx.db.read() as conn:
        fan_ho = advisors.require_advisor(conn, "fan_ho")
    _register(ctx.db, fan_ho.id, foreign, "someone/else")
    loaded_before = ctx.backend.adapters()

    strategy, reasons = Fallback(STRATEGIES).choose(ctx, fan_ho, "lora")

    assert strategy.name == "baseline"
    assert reasons[0].startswith("lora: adapter fan_ho@v1 cannot be loaded:")
    assert "fingerprint" in reasons[0]
    assert ctx.backend.adapters() == loaded_before
