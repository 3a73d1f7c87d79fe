"""The whole pipeline on the tiny model: a data set from a portfolio, a LoRA that learns
it (training loss down by 90% or more), an adapter whose greedy, grammar-constrained
critique of a training image has exactly the target's scores, and which then serves
through `--mode lora`.

The advisor has a one-line voice prompt (a third of a shipped advisor's prompt length):
the steps are that much cheaper and the test stays under a minute on two cores."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from training_helpers import LIST_ITEMS, TEXT_CHARS, add_profile, add_short_advisor

from mondrian.facts import FACTS_VERSION, measure
from mondrian.images import read_image_file
from mondrian.prompts import critique_prompt
from mondrian.storage.advisors import require_advisor
from mondrian.training.config import load_config
from mondrian.training.dataset import build_dataset
from mondrian.training.dataset_files import load_split

pytestmark = [
    pytest.mark.model,
    # PEFT's adapter loading asks transformers a deprecated question; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]

TINY_CONFIG = Path(__file__).parents[2] / "configs" / "train" / "tiny.toml"


def test_tiny_lora_learns_its_targets_and_serves_in_lora_mode(
    state, settings, tiny_checkpoint_factory, tmp_path, one_thread
):
    from mondrian.analysis import analyze
    from mondrian.backends.protocol import GenerationRequest
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.context import Context
    from mondrian.training.train import train

    base = tiny_checkpoint_factory()
    advisor_id = add_short_advisor(state)
    for i in range(4):
        add_profile(state, settings, i, advisor_id=advisor_id)
    dataset = tmp_path / "dataset"
    build_dataset(state, settings, advisor_id, dataset, val_fraction=0)

    cfg = load_config(TINY_CONFIG, model=str(base), device="cpu")
    started = time.perf_counter()
    result = train(
        cfg,
        advisor_id=advisor_id,
        dataset_dir=dataset,
        settings=settings,
        run_dir=tmp_path / "run",
        progress=False,
    )
    seconds = time.perf_counter() - started
    state_ = result.state
    print(
        f"\ntiny LoRA: {state_.step} steps, {result.seconds_per_step:.3f} s/step, "
        f"{seconds:.1f} s in train(); loss {state_.step_losses[0]:.3f} -> "
        f"{state_.train_loss[-1]:.3f}"
    )
    assert state_.train_loss[-1] <= 0.1 * state_.step_losses[0]

    adapter = result.adapter
    assert adapter is not None and adapter.ref == f"{advisor_id}@v1"
    assert result.activated and adapter.active  # the advisor's first version
    files = {p.name for p in adapter.path.iterdir()}
    assert files == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "mondrian_adapter.json",
        "loss_curve.svg",
    }
    meta = json.loads((adapter.path / "mondrian_adapter.json").read_text())
    assert meta["metrics"]["train_loss"] == state_.train_loss
    assert meta["hyperparameters"]["rank"] == cfg.rank
    assert meta["dataset"]["train_examples"] == 4
    assert meta["facts_version"] == FACTS_VERSION  # the data set's manifest's

    backend = TransformersBackend(
        str(base),
        device="cpu",
        max_pixels=cfg.max_pixels,  # the images the adapter was trained on
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )
    with state.read() as conn:
        advisor = require_advisor(conn, advisor_id)
    records = load_split(dataset, "train")

    def target_scores(record):
        target = json.loads(record["messages"][-1]["content"][0]["text"])
        return {key: dim["score"] for key, dim in target["dimensions"].items()}

    # Greedy and grammar-constrained, straight through the backend.
    backend.load_adapter(adapter.ref, adapter.path)
    # The prompt training saw: the photo and its "Measured:" block, as `analyze` makes it.
    first = read_image_file(Path(records[0]["images"][0]))
    prompt = critique_prompt(advisor, first.image, facts=measure(first))
    (generation,) = backend.generate([GenerationRequest(prompt, adapter=adapter.ref)])
    assert generation.critique is not None, generation.error
    assert generation.critique.dimensions.scores() == target_scores(records[0])

    # And as `--mode lora` serves it: the active adapter, found through the registry.
    photo = read_image_file(Path(records[1]["images"][0]))
    analysis = analyze(
        Context(backend=backend, db=state, settings=settings), advisor, photo, "lora"
    )
    assert analysis.mode_used == "lora" and analysis.model.adapter == adapter.ref
    assert analysis.critique.dimensions.scores() == target_scores(records[1])
