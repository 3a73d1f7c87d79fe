"""Tokens/s of the transformers backend on a tiny checkpoint, with and without the grammar.

Both runs decode the same number of tokens for the same prompt, batch 1, greedy, on the
CPU: the constrained run ends where its JSON ends, the unconstrained one is held to that
length (min_new_tokens = max_new_tokens). The grammar's own cost is also timed directly:
the time spent inside DecodingControl (accept the token, fill and apply the mask, read the
score-token logits) per generated token.

    .venv/bin/python bench/runtime_tiny.py [--arch qwen2_5_vl] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="qwen2_5_vl")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--text-chars", type=int, default=120)
    args = parser.parse_args()

    import torch
    from PIL import Image

    from mondrian.advisors import get_shipped
    from mondrian.backends.decoding.grammar import DecodingControl
    from mondrian.backends.protocol import GenerationRequest
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.prompts import critique_prompt
    from mondrian.tiny.checkpoint import make_tiny

    inside: list[float] = []
    original_call = DecodingControl.__call__

    def timed_call(self, input_ids, scores):
        started = time.perf_counter()
        out = original_call(self, input_ids, scores)
        inside.append(time.perf_counter() - started)
        return out

    DecodingControl.__call__ = timed_call

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny(Path(tmp) / "tiny", args.arch, seed=0)
        backend = TransformersBackend(str(path), device="cpu", max_text_chars=args.text_chars)
        prompt = critique_prompt(get_shipped("ansel"), Image.new("RGB", (224, 168), (90, 120, 160)))
        backend.generate([GenerationRequest(prompt=prompt)])  # warm-up

        constrained, free = [], []
        inside.clear()
        for _ in range(args.repeats):
            started = time.perf_counter()
            (result,) = backend.generate([GenerationRequest(prompt=prompt)])
            constrained.append((time.perf_counter() - started) / result.new_tokens)
            tokens = result.new_tokens
            inputs = backend.processor(
                text=[
                    backend.processor.apply_chat_template(
                        prompt.messages(), add_generation_prompt=True, tokenize=False
                    )
                ],
                images=prompt.images,
                return_tensors="pt",
            )
            started = time.perf_counter()
            with torch.inference_mode():
                out = backend.model.generate(
                    **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
                )
            assert out.shape[1] - inputs["input_ids"].shape[1] == tokens
            free.append((time.perf_counter() - started) / tokens)

    c, f = statistics.median(constrained) * 1e3, statistics.median(free) * 1e3
    print(
        f"arch {args.arch}, {tokens} new tokens per answer, batch 1, CPU "
        f"({torch.get_num_threads()} threads), median of {args.repeats}"
    )
    print(f"{'path':<28}{'ms/token':>10}{'tokens/s':>10}")
    print(f"{'stock generate (no grammar)':<28}{f:>10.2f}{1e3 / f:>10.0f}")
    print(f"{'mondrian (grammar + probes)':<28}{c:>10.2f}{1e3 / c:>10.0f}")
    g = statistics.median(inside) * 1e3
    print(f"difference of the two paths: {c - f:+.2f} ms/token (noise-prone on a shared CPU)")
    print(
        f"time inside the grammar processor: {g:.3f} ms/token (median over "
        f"{len(inside)} steps) = {g / c * 100:.0f}% of a constrained token"
    )


if __name__ == "__main__":
    main()
