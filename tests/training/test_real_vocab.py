"""The training pipeline on Qwen's real vocabulary, and the scores its adapter reports.

One LoRA is trained through `train()` (dataset from a portfolio, the registry, `--mode
lora`) on the real-vocabulary tiny checkpoint, on two photos: one critiqued with every
score 1, the other with every score 10. Then:
- it learns: greedy, grammar-constrained critiques of the two photos have their targets'
  scores, and `--mode lora` serves it;
- calibration is right where Qwen's pre-tokenizer makes the token after a score `,"`
  (one token): the photo it writes 1 for reports expected scores of about 1.0, the other
  about 10.0 — the 10-vs-1 split counts every token the grammar allows after the "1"
  (backends/decoding/calibration.py), in the stock backend and the fast path alike.

One training run serves every test here: on the 151,936-row head a step costs several
times the tiny vocabulary's, so the module trains once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from training_helpers import LIST_ITEMS, TEXT_CHARS, add_profile, add_short_advisor

from mondrian.backends.protocol import GenerationRequest
from mondrian.config import load_settings
from mondrian.images import read_image_file
from mondrian.prompts import critique_prompt
from mondrian.schema import DIMENSIONS, Critique
from mondrian.storage.advisors import require_advisor
from mondrian.storage.bootstrap import open_state
from mondrian.training.config import load_config
from mondrian.training.dataset import build_dataset
from mondrian.training.dataset_files import load_split

pytestmark = [
    pytest.mark.model,
    # PEFT's adapter loading asks transformers a deprecated question; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]

TINY_CONFIG = Path(__file__).parents[2] / "configs" / "train" / "tiny.toml"
SCORES = (1, 10)  # photo i is critiqued with every score SCORES[i]
# One step per epoch: both photos in one batch. 60 sufficed before the prompts carried
# the photo's measured facts; with their longer prompts 60 left one dimension at 1.84.
EPOCHS = 90


def _critique(score: int) -> Critique:
    return Critique.model_validate(
        {
            "image_description": f"A field {score}",
            "dimensions": {
                key: {"score": score, "comment": "Plain", "recommendation": "Keep"}
                for key in DIMENSIONS
            },
            "strengths": ["tone"],
            "improvements": ["more"],
        }
    )


@dataclass
class Trained:
    result: Any  # train()'s TrainResult
    backend: Any  # a TransformersBackend with the adapter loaded
    db: Any
    settings: Any
    advisor: Any
    photos: list[Path]  # the data set's image of photo i, critiqued with SCORES[i]

    def request(self, index: int) -> GenerationRequest:
        from mondrian.facts import measure
        from mondrian.images import read_image_file

        # The prompt training saw: the photo and its "Measured:" block, as `analyze` makes it.
        photo = read_image_file(self.photos[index])
        prompt = critique_prompt(self.advisor, photo.image, facts=measure(photo))
        return GenerationRequest(prompt, adapter=self.ref)

    @property
    def ref(self) -> str:
        return self.result.adapter.ref


@pytest.fixture(scope="module")
def trained(tiny_checkpoint_factory, tmp_path_factory) -> Iterator[Trained]:
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.training.train import train

    root = tmp_path_factory.mktemp("real-vocab-lora")
    base = tiny_checkpoint_factory(vocab="real")
    settings = load_settings(home=root / "home")
    db = open_state(settings)
    advisor_id = add_short_advisor(db)
    for index, score in enumerate(SCORES):
        add_profile(db, settings, index, critique=_critique(score), advisor_id=advisor_id)
    dataset = root / "dataset"
    build_dataset(db, settings, advisor_id, dataset, val_fraction=0)
    by_score = {}
    for record in load_split(dataset, "train"):
        target = json.loads(record["messages"][-1]["content"][0]["text"])
        (score,) = {dim["score"] for dim in target["dimensions"].values()}
        by_score[score] = Path(record["images"][0])

    cfg = load_config(TINY_CONFIG, model=str(base), device="cpu").merged(epochs=EPOCHS)
    result = train(
        cfg,
        advisor_id=advisor_id,
        dataset_dir=dataset,
        settings=settings,
        run_dir=root / "run",
        progress=False,
    )
    backend = TransformersBackend(
        str(base),
        device="cpu",
        max_pixels=cfg.max_pixels,  # the images the adapter was trained on
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )
    backend.load_adapter(result.adapter.ref, result.adapter.path)
    with db.read() as conn:
        advisor = require_advisor(conn, advisor_id)
    yield Trained(result, backend, db, settings, advisor, [by_score[s] for s in SCORES])
    db.close()


def test_the_loss_falls_to_near_the_heads_floor(trained):
    state = trained.result.state
    losses = state.step_losses
    print(f"\nreal vocabulary: {state.step} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    # Not the tiny vocabulary's 90%: over 151,936 random head rows of norm 1 and a final
    # hidden state of norm sqrt(128), no token's probability can pass about 0.25 (the
    # others' logsumexp is about ln(151936) + 1/2 = 12.4 against a best logit of 11.3),
    # so the loss cannot go below about 1.4 from its start near 12.
    assert losses[-1] <= 0.2 * losses[0]


@pytest.mark.parametrize("index", range(len(SCORES)))
def test_each_photo_gets_its_targets_scores_and_calibrated_expected_scores(trained, index):
    backend = trained.backend
    (generation,) = backend.generate([trained.request(index)])
    assert generation.critique is not None, generation.error
    score = SCORES[index]
    assert set(generation.critique.dimensions.scores().values()) == {score}
    old = _old_rule_expected(backend, trained.request(index), generation.text)
    print(f"\nwrites {score}: expected {generation.expected_scores}\n  old rule {old}")
    assert set(generation.expected_scores) == set(DIMENSIONS)
    for value in generation.expected_scores.values():
        assert value == pytest.approx(score, abs=0.1)


def test_the_fast_path_reports_the_same_expected_scores(trained):
    from mondrian.backends.transformers.engine.fast_path import FastPath

    backend = trained.backend
    fast = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    requests = [trained.request(i) for i in range(len(SCORES))]
    for mine, theirs in zip(fast.generate(requests), backend.generate(requests), strict=True):
        assert mine.text == theirs.text
        assert mine.expected_scores == pytest.approx(theirs.expected_scores, abs=1e-4)


def test_lora_mode_serves_the_active_adapter(trained):
    from mondrian.analysis import analyze
    from mondrian.context import Context

    assert trained.result.activated  # the advisor's first version
    photo = read_image_file(trained.photos[1])
    context = Context(backend=trained.backend, db=trained.db, settings=trained.settings)
    analysis = analyze(context, trained.advisor, photo, "lora")
    assert analysis.mode_used == "lora" and analysis.model.adapter == trained.ref
    assert set(analysis.critique.dimensions.scores().values()) == {SCORES[1]}


def _old_rule_expected(backend, request, text: str) -> dict[str, float]:
    """The expected scores the rule before this one gave (P(10|"1") from "0" against ","
    alone, after the digit softmax), from one forward pass over prompt + answer; printed
    for the record, not asserted."""
    import torch

    from mondrian.backends.decoding.calibration import score_char_offsets, token_at_offsets
    from mondrian.images import fit_pixels

    tok = backend.tokenizer
    prompt = request.prompt
    chat = backend.processor.apply_chat_template(
        prompt.messages(), add_generation_prompt=True, tokenize=False
    )
    images = [fit_pixels(img, backend.max_pixels) for img in prompt.images]
    enc = backend.processor(text=[chat], images=images, return_tensors="pt")
    answer = tok.encode(text, add_special_tokens=False)
    n = enc["input_ids"].shape[1]
    extra = {k: enc[k] for k in ("pixel_values", "image_grid_thw") if k in enc}
    if "mm_token_type_ids" in enc:
        extra["mm_token_type_ids"] = torch.cat(
            [enc["mm_token_type_ids"], torch.zeros(1, len(answer), dtype=torch.long)], 1
        )
    ids = torch.cat([enc["input_ids"], torch.tensor([answer])], 1)
    backend.model.set_adapter(request.adapter)
    with torch.inference_mode():
        logits = backend.model(input_ids=ids, **extra).logits[0].double()
    digits = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    comma = tok.convert_tokens_to_ids(",")
    pieces = [tok.decode([t]) for t in answer]
    where = token_at_offsets(pieces, score_char_offsets("".join(pieces)))
    out = {}
    for key, index in where.items():
        probs = torch.softmax(logits[n + index - 1, digits], 0)
        ten = torch.softmax(logits[n + index, [digits[0], comma]], 0)[0]
        if pieces[index] != "1":
            ten = torch.tensor(0.0)
        value = sum(d * float(p) for d, p in enumerate(probs))
        out[key] = round(value + float(probs[1] * ten) * 9, 4)
    return out
