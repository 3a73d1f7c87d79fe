"""The MLX backend (mlx-vlm on the CPU here, Metal on a Mac) on the tiny checkpoints: the
same Protocol, the same grammar and calibration, PEFT adapters with exact scaling, and the
same greedy critique as the transformers backend.

Cross-backend equality (float32): given the same pixels, the two backends' logits agree
to about 2e-6 and their greedy critiques are identical. The pixels themselves can differ:
the transformers backend uses transformers' torchvision image processor, the MLX backend
mlx-vlm's numpy one (equal to transformers' PIL processor), and when an image is resized
the two round differently, by at most one 8-bit level (0.015 after normalisation) on some
pixels. Measured here: identical critiques on every tested photo of all three
architectures anyway; image embeddings differ by about 5e-4 for resized photos and 1e-6
for photos already at the processor's size. The tests assert exactly that.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from backend_helpers import (
    assert_plain_tokens_then_a_stop,
    assert_text_is_the_critique,
    critique_requests,
)
from PIL import Image

pytest.importorskip("mlx_vlm")

from mondrian.advisors import get_shipped, shipped_advisors
from mondrian.backends.protocol import GenerationRequest
from mondrian.errors import InvalidInput, NotFound
from mondrian.prompts import critique_prompt
from mondrian.schema import DIMENSIONS, Critique, grade_for, overall_score
from mondrian.tiny.families import ARCHES, DEFAULT_ARCH

pytestmark = pytest.mark.model

TEXT_CHARS = 16  # short strings keep a random model's answers short
LIST_ITEMS = 1
PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"
# Below both vocabularies' processor budgets for the tiny photos; it bounds the real
# processor's (16k image tokens) on the large test photos.
SMALL_PIXELS = 64 * 28 * 28
UNCONSTRAINED = 4  # requests, each given the whole answer budget (one at a time on MLX)


def _mlx(model_dir: Path, cache_dir: Path):
    from mondrian.backends.mlx.backend import MLXBackend

    return MLXBackend(
        str(model_dir),
        cache_dir=cache_dir,
        max_pixels=SMALL_PIXELS,
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )


def _transformers(model_dir: Path):
    from mondrian.backends.transformers.backend import TransformersBackend

    return TransformersBackend(
        str(model_dir),
        device="cpu",
        max_pixels=SMALL_PIXELS,
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )


@pytest.fixture(scope="module")
def mlx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlx-cache")


@pytest.fixture(scope="module")
def backend(tiny_checkpoint_factory, mlx_cache):
    return _mlx(tiny_checkpoint_factory(), mlx_cache)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint_factory):
    """The transformers backend on the same checkpoint."""
    return _transformers(tiny_checkpoint_factory())


@pytest.fixture(scope="module")
def adapter_root(tiny_checkpoint_factory, reference, random_adapter_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlx-adapters")
    for name, seed in (("ansel@v1", 1), ("fan_ho@v1", 2)):
        random_adapter_factory(tiny_checkpoint_factory(), root / name, seed, reference.fingerprint)
    return root


# --- loading -------------------------------------------------------------------------------


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("arch", ARCHES)
def test_a_converted_config_loads_and_the_source_stays_untouched(
    arch, tiny_checkpoint_factory, tmp_path
):
    from mondrian.backends.mlx import checkpoint as mlx_checkpoint

    source = tiny_checkpoint_factory(arch)
    before = _digests(source)
    prepared = mlx_checkpoint.prepare_checkpoint(source, tmp_path)
    assert mlx_checkpoint.prepare_checkpoint(source, tmp_path) == prepared  # cached
    assert _digests(source) == before and prepared.parent == tmp_path

    original = json.loads((source / "config.json").read_text())
    config = json.loads((prepared / "config.json").read_text())
    assert config == mlx_checkpoint.convert_config(config), "conversion is idempotent"
    assert config["vision_config"]["model_type"] == original["model_type"] == arch
    text = original["text_config"]
    assert config["rope_scaling"]["mrope_section"] == text["rope_parameters"]["mrope_section"]
    assert config["rope_theta"] == text["rope_parameters"]["rope_theta"]
    for key in ("hidden_size", "num_hidden_layers", "vocab_size", "num_key_value_heads"):
        assert config[key] == config["text_config"][key] == text[key]
    for name in before.keys() - {"config.json"}:
        assert (prepared / name).resolve() == (source / name).resolve()

    model = mlx_checkpoint.load_model(prepared)  # strict: every weight found a place
    assert type(model).__module__.startswith(f"mlx_vlm.models.{arch}.")


def test_the_transformers_auto_processor_is_left_alone(backend, tiny_checkpoint_factory):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(tiny_checkpoint_factory()))
    assert type(processor).__module__.startswith("transformers.")
    assert type(backend.processor).__module__.startswith("mlx_vlm.")


def test_info_and_fingerprint(backend, reference):
    info = backend.info()
    assert info["backend"] == "mlx" and info["dtype"] == "float32"
    assert info["device"] in ("cpu", "gpu")
    assert info["fingerprint"] == reference.fingerprint


def test_the_registry_names_mlx():
    from mondrian.backends.protocol import BACKENDS, resolve_backend_name

    assert BACKENDS["mlx"] == "mondrian.backends.mlx.backend:MLXBackend"
    assert resolve_backend_name("mlx") == "mlx"


# --- generation ---------------------------------------------------------------------------


def test_constrained_critiques_are_valid_and_unconstrained_ones_are_not(backend, generated_ids):
    results = backend.generate(critique_requests(4))
    assert len(generated_ids) == len(results) == 4
    for result, ids in zip(results, generated_ids, strict=True):
        assert_text_is_the_critique(result.text, result.critique, TEXT_CHARS, LIST_ITEMS)
        assert result.stopped and result.new_tokens <= backend.answer_budget
        assert_plain_tokens_then_a_stop(backend.tokenizer, backend.decoder.stop_token_ids, ids)
    # Unconstrained, with as many tokens as the longest valid answer takes.
    budget = backend.answer_budget
    loose = backend.generate(
        critique_requests(UNCONSTRAINED, constrained=False, max_new_tokens=budget)
    )
    assert len(loose) == UNCONSTRAINED
    assert all(r.critique is None and r.error and r.new_tokens <= budget for r in loose)


def test_expected_scores_follow_the_score_token_probabilities(backend):
    (result,) = backend.generate(critique_requests(1))
    assert set(result.score_distributions) == set(DIMENSIONS)
    for key, dim in result.critique.dimensions.items():
        dist = result.score_distributions[key]
        assert sum(dist) == pytest.approx(1.0)
        assert dim.expected_score == pytest.approx(sum(i * p for i, p in enumerate(dist)), abs=1e-3)
        digits = [*dist[:10]]
        digits[1] += dist[10]
        assert str(int(np.argmax(digits))) == ("1" if dim.score == 10 else str(dim.score))


def test_tokens_stream_per_request(backend):
    seen: list[tuple[int, int]] = []
    results = backend.generate(critique_requests(2), on_token=lambda row, n: seen.append((row, n)))
    for row, result in enumerate(results):
        steps = [n for r, n in seen if r == row]
        assert steps == sorted(steps) and len(steps) >= result.new_tokens - 1


# --- the same answers as the transformers backend -----------------------------------------


def _same(mine, theirs) -> None:
    assert mine.text == theirs.text
    assert (mine.new_tokens, mine.stopped) == (theirs.new_tokens, theirs.stopped)
    assert mine.expected_scores.keys() == theirs.expected_scores.keys()
    for key, value in mine.expected_scores.items():
        assert value == pytest.approx(theirs.expected_scores[key], abs=1e-3)


@pytest.mark.parametrize(
    ("arch", "vocab"),
    [
        *((arch, "tiny") for arch in ARCHES),
        pytest.param(
            DEFAULT_ARCH,
            "real",
        ),
    ],
    ids=lambda value: value,
)
def test_the_same_greedy_critique_and_embeddings_on_both_backends(
    arch, vocab, tiny_checkpoint_factory, mlx_cache, request
):
    if (arch, vocab) == (DEFAULT_ARCH, "tiny"):  # the module's backends: no second compile
        mine, theirs = request.getfixturevalue("backend"), request.getfixturevalue("reference")
    else:
        model_dir = tiny_checkpoint_factory(arch, vocab=vocab)
        mine, theirs = _mlx(model_dir, mlx_cache), _transformers(model_dir)
    assert mine.fingerprint == theirs.fingerprint
    chelsea = Image.open(PHOTOS / "chelsea.jpg").convert("RGB")  # resized by the processors
    request = GenerationRequest(prompt=critique_prompt(shipped_advisors()[0], chelsea))
    _same(mine.generate([request])[0], theirs.generate([request])[0])

    exact = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8))
    exact = exact.resize((2 * 28, 2 * 28) if arch != "qwen3_vl" else (2 * 32, 2 * 32))
    for images, tolerance in (([exact], 1e-5), ([chelsea, exact], 2e-3)):
        a, b = np.array(mine.embed_images(images)), np.array(theirs.embed_images(images))
        assert a.shape == b.shape and np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        assert np.abs(a - b).max() < tolerance


def test_adapters_give_the_transformers_answers_and_switch_per_request(
    backend, reference, adapter_root
):
    for name in ("ansel@v1", "fan_ho@v1"):
        backend.load_adapter(name, adapter_root / name)
        reference.load_adapter(name, adapter_root / name)
    assert backend.adapters() == ["ansel@v1", "fan_ho@v1"]
    (prompt,) = [r.prompt for r in critique_requests(1)]
    order = [None, "ansel@v1", "fan_ho@v1", "ansel@v1", None]
    mine = backend.generate([GenerationRequest(prompt=prompt, adapter=a) for a in order])
    # The transformers answers with each adapter (the base model's is compared in the
    # equality test); the repeats are checked against the first answers on MLX.
    for index in (1, 2):
        (theirs,) = reference.generate([GenerationRequest(prompt=prompt, adapter=order[index])])
        assert mine[index].adapter == order[index]
        _same(mine[index], theirs)
    assert len({mine[0].text, mine[1].text, mine[2].text}) == 3, "each adapter changes the answer"
    assert mine[3].text == mine[1].text and mine[4].text == mine[0].text

    backend.unload_adapter("fan_ho@v1")
    assert backend.adapters() == ["ansel@v1"]
    with pytest.raises(NotFound):
        backend.generate([GenerationRequest(prompt=prompt, adapter="fan_ho@v1")])
    (base,) = backend.generate([GenerationRequest(prompt=prompt)])
    assert base.text == mine[0].text


@pytest.mark.parametrize(
    "options",
    [{"r": 4, "lora_alpha": 8}, {"r": 8, "lora_alpha": 4, "use_rslora": True}],
    ids=["alpha-over-r", "rslora"],
)
def test_lora_scaling_is_exact(options, tiny_checkpoint_factory, mlx_cache, tmp_path):
    """Logits of the PEFT model in torch against the same adapter on MLX (float32)."""
    import mlx.core as mx
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model_dir = tiny_checkpoint_factory()
    torch.manual_seed(5)
    base = AutoModelForImageTextToText.from_pretrained(model_dir)
    config = LoraConfig(
        target_modules=r".*language_model.*\.(q_proj|v_proj|o_proj|up_proj|down_proj)",
        init_lora_weights=False,
        **options,
    )
    peft_model = get_peft_model(base, config).eval()
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    ids = [[4001, 882, 198, 40, 1000, 200, 17, 4002, 198]]
    with torch.no_grad():
        expected = peft_model(input_ids=torch.tensor(ids)).logits[0].numpy()
        with peft_model.disable_adapter():
            plain = peft_model(input_ids=torch.tensor(ids)).logits[0].numpy()

    backend = _mlx(model_dir, mlx_cache)
    backend.load_adapter("x@v1", tmp_path / "adapter")
    backend.bank.active = "x@v1"
    got = np.array(backend.model(mx.array(ids)).logits[0])
    assert np.abs(expected - plain).max() > 0.1, "the adapter must matter"
    assert np.abs(got - expected).max() < 1e-4


# --- refusals ------------------------------------------------------------------------------


def test_an_adapter_from_another_base_is_refused(
    backend, adapter_root, tiny_checkpoint_factory, random_adapter_factory, mlx_cache
):
    other_base = tiny_checkpoint_factory(seed=1)
    other = _mlx(other_base, mlx_cache).fingerprint
    assert other != backend.fingerprint
    random_adapter_factory(other_base, adapter_root / "foreign@v1", 3, other)
    with pytest.raises(InvalidInput) as info:
        backend.load_adapter("foreign@v1", adapter_root / "foreign@v1")
    assert str(other_base) in info.value.message and backend.model_id in info.value.message
    assert "foreign@v1" not in backend.adapters()


def _variant(root: Path, source: Path, name: str) -> Path:
    target = root / name
    shutil.copytree(source, target)
    return target


def test_adapters_it_cannot_reproduce_are_refused(backend, adapter_root, tmp_path):
    import mlx.core as mx

    source = adapter_root / "ansel@v1"
    with pytest.raises(NotFound):
        backend.load_adapter("missing@v1", tmp_path / "missing")

    pickled = _variant(tmp_path, source, "pickled@v1")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(InvalidInput, match="safetensors"):
        backend.load_adapter("pickled@v1", pickled)

    dora = _variant(tmp_path, source, "dora@v1")
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(InvalidInput, match="use_dora"):
        backend.load_adapter("dora@v1", dora)

    vision = _variant(tmp_path, source, "vision@v1")
    weights = dict(mx.load(str(vision / "adapter_model.safetensors")))
    weights["base_model.model.model.visual.blocks.0.attn.qkv.lora_A.weight"] = mx.zeros((4, 64))
    mx.save_safetensors(str(vision / "adapter_model.safetensors"), weights)
    with pytest.raises(InvalidInput, match="visual"):
        backend.load_adapter("vision@v1", vision)
    assert not {"pickled@v1", "dora@v1", "vision@v1"} & set(backend.adapters())


# --- the three modes and the CLI on --backend mlx -----------------------------------------


def test_analyze_in_the_three_modes(backend, adapter_root, tiny_checkpoint_factory, tmp_path):
    from mondrian.analysis import analyze
    from mondrian.config import load_settings
    from mondrian.context import Context
    from mondrian.images import read_image_file
    from mondrian.portfolio.indexing import index_paths
    from mondrian.storage import adapters, advisors
    from mondrian.storage.bootstrap import open_state

    settings = load_settings(max_text_chars=TEXT_CHARS)
    db = open_state(settings)
    try:
        ctx = Context(backend=backend, db=db, settings=settings)
        with db.read() as conn:
            ansel = advisors.require_advisor(conn, "ansel")
        photo = read_image_file(PHOTOS / "chelsea.jpg")

        base = analyze(ctx, ansel, photo, "baseline")
        assert (base.mode_used, base.model.backend, base.model.adapter) == ("baseline", "mlx", None)

        portfolio = tmp_path / "portfolio"
        portfolio.mkdir()
        for name in ("coffee", "rocket"):
            shutil.copy(PHOTOS / f"{name}.jpg", portfolio / f"{name}.jpg")
        report = index_paths(ctx, ansel, [portfolio])
        assert len(report.indexed) == 2, report
        rag = analyze(ctx, ansel, photo, "rag")
        assert rag.mode_used == "rag" and len(rag.references) == 2

        def register(conn):
            version = adapters.register_adapter(
                conn, "ansel", adapter_root / "ansel@v1", str(tiny_checkpoint_factory())
            )
            return adapters.activate(conn, "ansel", version).ref

        assert db.write(register) == "ansel@v1"
        lora = analyze(ctx, ansel, photo, "lora")
        assert (lora.mode_used, lora.model.adapter, lora.model.variant) == (
            "lora",
            "ansel@v1",
            "fine_tuned",
        )
        assert lora.critique.model_dump() != base.critique.model_dump()
    finally:
        db.close()


def test_cli_analyze_with_backend_mlx(tiny_checkpoint_factory, tmp_path, capsys, monkeypatch):
    from mondrian.cli.main import main

    monkeypatch.setenv("MONDRIAN_MAX_TEXT_CHARS", str(TEXT_CHARS))
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (96, 72), (180, 120, 60)).save(photo)
    model = str(tiny_checkpoint_factory())
    args = ["analyze", str(photo), "--advisor", "ansel", "--model", model, "--backend", "mlx"]
    assert main([*args, "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == {
        "base": model,
        "adapter": None,
        "variant": "base",
        "backend": "mlx",
        "engine": "mlx",
    }
    critique = Critique.model_validate(result["critique"])
    assert critique.overall_grade == grade_for(critique.overall_score)
    weights = get_shipped("ansel").weights  # the overall score is the advisor's weighting
    assert critique.overall_score == overall_score(critique.dimensions.scores(), weights)


# --- training on MLX ---------------------------------------------------------------------

TRAIN_ADVISOR = "tester"


def _training_set(settings, out_dir: Path, count: int = 4) -> Path:
    """`count` coloured photos with short curated critiques for an advisor with a one-line
    voice prompt (short prompts keep tiny-model steps cheap), built into a data set."""
    import io

    from mondrian.advisors import get_shipped
    from mondrian.storage import images, profiles
    from mondrian.storage.advisors import upsert_advisor
    from mondrian.storage.bootstrap import open_state
    from mondrian.training.dataset import build_dataset

    advisor = get_shipped("ansel").model_copy(
        update={"id": TRAIN_ADVISOR, "name": "Tester", "voice_prompt": "You are a terse critic."}
    )
    with open_state(settings) as db:
        db.write(upsert_advisor, advisor)
        for index in range(count):
            rng = np.random.default_rng(index)
            color = np.array([(200, 40, 40), (40, 180, 60), (40, 60, 200), (220, 200, 40)][index])
            pixels = np.clip(color + rng.integers(-30, 30, (112, 112, 3)), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            image_hash = db.write(
                images.store_image, settings.images_dir, buffer.getvalue(), "image/png", 112, 112
            )
            db.write(images.add_to_portfolio, TRAIN_ADVISOR, image_hash, f"photo {index}")
            critique = Critique.model_validate(
                {
                    "image_description": f"Field {index}",
                    "dimensions": {
                        key: {
                            "score": (index + k) % 11,
                            "comment": "Fine",
                            "recommendation": "Keep",
                        }
                        for k, key in enumerate(DIMENSIONS)
                    },
                    "strengths": [f"tone {index}"],
                    "improvements": ["more"],
                }
            )
            db.write(profiles.upsert_profile, TRAIN_ADVISOR, image_hash, critique, "curated", None)
        build_dataset(
            db,
            settings,
            TRAIN_ADVISOR,
            out_dir,
            val_fraction=0.25,
            max_text_chars=TEXT_CHARS,
            max_list_items=LIST_ITEMS,
        )
    return out_dir


def _train_config(model: Path, epochs: int):
    from mondrian.training.config import TrainConfig

    return TrainConfig(
        model=str(model),
        rank=8,
        alpha=16,
        dropout=0.0,
        lr=1e-3,
        epochs=epochs,
        scheduler="constant",
        warmup_ratio=0.0,
    )


def test_mlx_training_loss_falls_and_the_adapter_serves_on_both_backends(
    backend, reference, tiny_checkpoint_factory, tmp_path
):
    from mondrian.config import load_settings
    from mondrian.prompts import Prompt
    from mondrian.training.dataset import load_split
    from mondrian.training.mlx_train import train_mlx

    model = tiny_checkpoint_factory()
    settings = load_settings(model=str(model))
    data = _training_set(settings, tmp_path / "data")

    result = train_mlx(
        _train_config(model, epochs=3),
        advisor_id=TRAIN_ADVISOR,
        dataset_dir=data,
        settings=settings,
        progress=False,
    )

    state = result.state
    assert state.step == state.updates == 9  # 3 training examples, batch 1, 3 epochs
    assert state.train_loss[-1] < state.train_loss[0] - 0.5, state.train_loss
    assert state.val_loss[-1] < state.val_loss[0], state.val_loss
    assert result.adapter.ref == f"{TRAIN_ADVISOR}@v1" and result.activated
    meta = result.adapter.metadata
    assert meta["base_fingerprint"] == backend.fingerprint == reference.fingerprint
    assert meta["training"]["backend"] == "mlx"
    path = result.adapter.path
    config = json.loads((path / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (8, 16)

    record = load_split(data, "train")[0]
    system, user = (
        next(part["text"] for part in message["content"] if part.get("type") == "text")
        for message in record["messages"][:2]
    )
    prompt = Prompt(system=system, user=user, images=[Image.open(record["images"][0]).copy()])
    for serving in (backend, reference):
        serving.load_adapter("tester@v1", path)
    requests = [GenerationRequest(prompt=prompt, adapter=a) for a in (None, "tester@v1")]
    base, tuned = backend.generate(requests)
    (theirs,) = reference.generate(requests[1:])
    assert tuned.critique is not None and tuned.text != base.text
    _same(tuned, theirs)


def test_mlx_training_refuses_batches_without_their_images(
    tiny_checkpoint_factory, tmp_path, monkeypatch
):
    from mondrian.config import load_settings
    from mondrian.training import mlx_train
    from mondrian.training.collate import Collator, ImageTokenMismatch

    model = tiny_checkpoint_factory()
    settings = load_settings(model=str(model))
    data = _training_set(settings, tmp_path / "data")

    class DroppingCollator(Collator):  # the mlx-vlm#824 trap: pixels lost on the way
        def __call__(self, examples):
            batch = super().__call__(examples)
            batch.pop("pixel_values", None)
            batch.pop("image_grid_thw", None)
            return batch

    monkeypatch.setattr(mlx_train, "Collator", DroppingCollator)
    with pytest.raises(ImageTokenMismatch):
        mlx_train.train_mlx(
            _train_config(model, epochs=1),
            advisor_id=TRAIN_ADVISOR,
            dataset_dir=data,
            settings=settings,
            progress=False,
        )
