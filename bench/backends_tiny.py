"""Tiny-model generation throughput of the transformers and MLX backends, side by side.

Five critique requests (tiny qwen2_5_vl, float32, CPU, strings bounded to 24 characters),
one at a time and, on transformers, also as one batch; one warm-up, best of three runs.

    .venv/bin/python bench/backends_tiny.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def main() -> None:
    import numpy as np
    from PIL import Image

    from mondrian.advisors import shipped_advisors
    from mondrian.backends.protocol import GenerationRequest
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.prompts import critique_prompt
    from mondrian.tiny.checkpoint import make_tiny

    rng = np.random.default_rng(0)
    photos = [
        Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 64 + 4 * i, 3), dtype=np.uint8))
        for i in range(5)
    ]
    advisors = shipped_advisors()
    requests = [
        GenerationRequest(prompt=critique_prompt(advisors[i % len(advisors)], photo))
        for i, photo in enumerate(photos)
    ]
    options = {"max_text_chars": 24, "max_list_items": 2}

    def run(name: str, backend, batched: bool) -> None:
        backend.generate(requests[:1])  # warm-up: first-call costs
        best = float("inf")
        for _ in range(3):  # best of 3: on a shared machine contention only slows
            started = time.perf_counter()
            if batched:
                out = backend.generate(requests)
            else:
                out = [backend.generate([r])[0] for r in requests]
            best = min(best, time.perf_counter() - started)
        tokens = sum(o.new_tokens for o in out)
        print(f"{name:<34}{tokens:>7}{best:>9.2f}{tokens / best:>10.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny(Path(tmp) / "tiny", "qwen2_5_vl", seed=0)
        print(f"{'backend':<34}{'tokens':>7}{'s':>9}{'tok/s':>10}")
        torch_backend = TransformersBackend(str(path), device="cpu", **options)
        run("transformers, one at a time", torch_backend, batched=False)
        run("transformers, one batch of 5", torch_backend, batched=True)
        try:
            from mondrian.backends.mlx.backend import MLXBackend
        except ImportError:
            print("mlx: not installed (pip install 'mondrian[mlx]')")
            return
        mlx_backend = MLXBackend(
            str(path),
            device="cpu",
            dtype="float32",
            max_pixels=1280 * 28 * 28,
            cache_dir=Path(tmp) / "mlx-cache",
            **options,
        )
        run("mlx, one at a time", mlx_backend, batched=False)


if __name__ == "__main__":
    main()
