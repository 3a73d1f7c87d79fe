"""The ecosystem's own tools read what Mondrian writes, unchanged and without Mondrian.

A data set (`mondrian dataset build`), an adapter version (`mondrian train`, published by
the registry) and an MLX export (`mondrian adapters export --format mlx`) are made here
with Mondrian's code; then, each in a fresh interpreter that never imports Mondrian and
runs in another working directory:

- `datasets.load_dataset(DIR)` reads the "train" and "validation" splits, and the image
  paths open from there;
- TRL's `SFTTrainer` trains on them for 2 steps, with assistant-only loss (the labels it
  keeps are exactly the target critique and the end-of-turn token);
- PEFT alone loads the adapter and merges it; the merged model computes what base+adapter
  computes;
- mlx-vlm alone (`mlx_vlm.load(OUT/base, adapter_path=OUT)`) loads the export, and its
  language model computes the logits PEFT computes.

docs/ecosystem.md shows the same recipes.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [
    pytest.mark.model,
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]

ADVISOR = "tester"
TINY_CONFIG = Path(__file__).parents[1] / "configs" / "train" / "tiny.toml"
TOKENS = [1, 5, 9, 40, 300, 7]  # a text-only input for the logit comparisons


def _critique(index: int):
    from mondrian.schema import DIMENSIONS, Critique

    return Critique.model_validate(
        {
            "image_description": f"Field {index}",
            "dimensions": {
                key: {"score": (index + k) % 11, "comment": "Fine", "recommendation": "Keep"}
                for k, key in enumerate(DIMENSIONS)
            },
            "strengths": ["tone"],
            "improvements": ["more"],
        }
    )


def _build_dataset(settings, db, out: Path) -> Path:
    """Three photos with short curated critiques for a one-line-voice advisor."""
    from mondrian.advisors import get_shipped
    from mondrian.storage import images, profiles
    from mondrian.storage.advisors import upsert_advisor
    from mondrian.training.dataset import build_dataset

    advisor = get_shipped("ansel").model_copy(
        update={"id": ADVISOR, "name": "Tester", "voice_prompt": "You are a terse critic."}
    )
    db.write(upsert_advisor, advisor)
    for index in range(3):
        rng = np.random.default_rng(index)
        color = np.array([(200, 40, 40), (40, 180, 60), (40, 60, 200)][index])
        pixels = np.clip(color + rng.integers(-30, 30, (112, 112, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        image_hash = db.write(
            images.store_image, settings.images_dir, buffer.getvalue(), "image/png", 112, 112
        )
        db.write(images.add_to_portfolio, ADVISOR, image_hash, f"photo {index}")
        db.write(profiles.upsert_profile, ADVISOR, image_hash, _critique(index), "curated", None)
    build_dataset(
        db, settings, ADVISOR, out, val_fraction=0.34, max_text_chars=24, max_list_items=2
    )
    return out


def _start_alone(name: str, script: str, *args: object, cwd: Path) -> subprocess.Popen:
    """Start `script` in a fresh interpreter in `cwd`, without Mondrian on the path; its
    output goes to `cwd/<name>.out|err` (files, not pipes: nothing blocks on a full pipe
    while another run is awaited). The script fails if anything imported Mondrian.
    Started together, the runs overlap their imports."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MONDRIAN_HOME")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    guard = '\nassert not [m for m in sys.modules if m.split(".")[0] == "mondrian"]\n'
    with (cwd / f"{name}.out").open("w") as out, (cwd / f"{name}.err").open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys\n" + script + guard, *map(str, args)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
        )


def _result(name: str, process: subprocess.Popen, cwd: Path) -> dict:
    """The JSON object the script printed last."""
    try:
        process.wait(timeout=540)  # under pytest's 600 s: a hang, not a busy machine
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, (cwd / f"{name}.err").read_text()[-4000:]
    return json.loads((cwd / f"{name}.out").read_text().strip().splitlines()[-1])


LOAD_DATASET = """
import json, os
from datasets import Image, List, load_dataset

data = load_dataset(sys.argv[1])
rows = {split: list(data[split]) for split in data}
paths_open = all(os.path.isfile(p) for split in rows.values() for r in split for p in r["images"])
decoded = data["train"].cast_column("images", List(Image()))[0]["images"][0].size
print(json.dumps({"splits": {k: len(v) for k, v in rows.items()}, "paths_open": paths_open,
                  "decoded": list(decoded), "cwd": os.getcwd()}))
"""

DOCS = Path(__file__).parents[1] / "docs" / "ecosystem.md"


def docs_recipe(name: str) -> str:
    """The Python block that follows `<!-- recipe:NAME ... -->` in docs/ecosystem.md."""
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"<!-- recipe:{name}\b.*?-->\n```python\n(.*?)```", text, re.S)
    assert match, f"no recipe:{name} block in {DOCS}"
    return match.group(1)


# The documented recipe, run as it is, then two steps of it on the tiny checkpoint.
TRL_SFT = (
    docs_recipe("trl")
    + """
import json

dataset_dir, base, out = sys.argv[1:4]
trainer = make_trainer(
    dataset_dir, base, out, max_steps=2, learning_rate=1e-3, logging_steps=1,
    save_strategy="no", use_cpu=True, bf16=False,
)
example = trainer.train_dataset[0]
labels = trainer.data_collator([dict(example)])["labels"][0]
kept = trainer.processing_class.tokenizer.decode(labels[labels != -100])
target = example["messages"][-1]["content"][0]["text"]
result = trainer.train()
losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
print(json.dumps({"steps": result.global_step, "losses": losses, "kept": kept, "target": target,
                  "eval_loss": trainer.evaluate()["eval_loss"]}))
"""
)

PEFT_MERGE = """
import json
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText

base, adapter, tokens = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ids = torch.tensor([tokens])
model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
with torch.no_grad():
    plain = model(input_ids=ids).logits[0]
    peft_model = PeftModel.from_pretrained(model, adapter)
    with_adapter = peft_model(input_ids=ids).logits[0]
    merged = peft_model.merge_and_unload()
    after_merge = merged(input_ids=ids).logits[0]
print(json.dumps({
    "merged_type": type(merged).__name__,
    "lora_left": sum("lora_" in name for name, _ in merged.named_parameters()),
    "merge_diff": float((after_merge - with_adapter).abs().max()),
    "adapter_effect": float((with_adapter - plain).abs().max()),
    "logits": with_adapter.tolist(),
}))
"""

MLX_VLM_LOAD = """
import json
import mlx.core as mx
import mlx_vlm
from mlx_vlm.trainer.peft.lora_layers import LoRALinear

model_path, adapter_path, tokens = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model, processor = mlx_vlm.load(model_path, adapter_path=adapter_path)
lora = sum(isinstance(m, LoRALinear) for _, m in model.language_model.named_modules())
logits = model.language_model(mx.array([tokens])).logits[0].astype(mx.float32)
print(json.dumps({"lora_layers": lora, "processor": type(processor).__name__,
                  "logits": logits.tolist()}))
"""


def test_the_ecosystem_reads_mondrians_artifacts(tiny_checkpoint_factory, tmp_path):
    from mondrian.config import load_settings
    from mondrian.storage.bootstrap import open_state
    from mondrian.training.config import load_config
    from mondrian.training.export_mlx import export_mlx
    from mondrian.training.train import train

    base = tiny_checkpoint_factory()
    settings = load_settings(model=str(base))
    elsewhere = tmp_path / "elsewhere"  # no working directory Mondrian wrote anything in
    elsewhere.mkdir()
    with open_state(settings) as db:
        dataset = _build_dataset(settings, db, tmp_path / "dataset")
    cfg = load_config(TINY_CONFIG, model=str(base), device="cpu").merged(
        epochs=1, batch_size=1, max_pixels=112 * 112
    )
    result = train(cfg, advisor_id=ADVISOR, dataset_dir=dataset, settings=settings, progress=False)
    adapter = result.adapter
    assert adapter is not None
    export = export_mlx(adapter.path, tmp_path / "mlx")

    tokens = json.dumps(TOKENS)
    runs = {
        "datasets": (LOAD_DATASET, dataset),
        "trl": (TRL_SFT, dataset, base, tmp_path / "trl"),
        "peft": (PEFT_MERGE, base, adapter.path, tokens),
        "mlx": (MLX_VLM_LOAD, export / "base", export, tokens),
    }
    started = {name: _start_alone(name, *run, cwd=elsewhere) for name, run in runs.items()}
    try:
        loaded, sft, peft, mlx = (_result(n, p, elsewhere) for n, p in started.items())
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    assert loaded["splits"] == {"train": 2, "validation": 1}
    assert loaded["paths_open"] and loaded["decoded"] == [112, 112]

    assert sft["steps"] == 2 and len(sft["losses"]) == 2
    assert all(np.isfinite(sft["losses"])) and np.isfinite(sft["eval_loss"])
    # Assistant-only loss: the labels are the answer and the end of the turn, nothing else.
    assert sft["kept"] == sft["target"] + "<|im_end|>\n"

    assert peft["lora_left"] == 0 and peft["merged_type"].endswith("ForConditionalGeneration")
    assert peft["adapter_effect"] > 1e-4  # the trained adapter changes the answer ...
    assert peft["merge_diff"] < 1e-4  # ... and merged, it changes it the same way

    assert mlx["lora_layers"] == 14  # 2 decoder layers x 7 linears
    expected = np.array(peft["logits"])
    assert np.allclose(np.array(mlx["logits"]), expected, atol=1e-3), np.abs(
        np.array(mlx["logits"]) - expected
    ).max()
