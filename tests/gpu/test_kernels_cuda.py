"""The Triton decode kernels (backends/transformers/engine/kernels/) compiled on a GPU:
each equals its torch reference in float32 (TF32 off, tests/gpu/conftest.py) to the order
of its sums, and in bfloat16 within the check's tolerance (the one the fast path uses to
decide whether to use a kernel); the fast path without them gives the same tokens as
with them, in float32. tests/backends/test_kernels.py runs the check on the CPU under
Triton's interpreter."""

from __future__ import annotations

import pytest

from generation_helpers import critique_request, same_as_stock

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_each_kernel_equals_its_reference_on_the_gpu(dtype):
    import torch

    from mondrian.backends.transformers.engine.kernels.decode import NAMES, TOLERANCE, check

    kind = getattr(torch, dtype)
    results = check(torch.device("cuda"), kind)
    assert set(results) == set(NAMES)
    limit = 1e-5 if kind is torch.float32 else TOLERANCE[kind]
    for name, error in results.items():
        assert isinstance(error, float), f"{name}: {error}"
        assert error <= limit, f"{name}: {error} (limit {limit})"


def test_the_fast_path_with_and_without_kernels_gives_the_stock_tokens(tiny_checkpoint_factory):
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath

    backend = TransformersBackend(
        str(tiny_checkpoint_factory()),
        device="cuda",
        dtype="float32",
        max_pixels=64 * 28 * 28,
        max_text_chars=8,
        max_list_items=1,
        fast="off",  # the stock reference; the test builds the FastPaths it compares
    )
    requests = [
        critique_request(30, max_new_tokens=48),
        critique_request(31, constrained=False, max_new_tokens=24),
    ]
    for kernels in (True, False):
        fast = FastPath(backend, kernels=kernels, vision_varlen=False)
        assert (fast.kernels is not None) == kernels
        same_as_stock(backend, fast, requests)


def test_the_kernel_ablation_times_each_set_through_graphs(tiny_checkpoint_factory, tmp_path):
    # bench/kernel_ablation.py's CUDA side on the tiny checkpoint in float32: every set's
    # forward graph captured and replayed on states of its own, each set's logits the torch
    # ops', and the fast path's own state (of one request) left as it was.
    import sys
    from pathlib import Path

    from generation_helpers import make_lora
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import kernel_ablation

    base = tiny_checkpoint_factory()
    backend = TransformersBackend(
        str(base), device="cuda", dtype="float32", max_pixels=64 * 28 * 28, fast="off"
    )
    names = ["ansel@v1", "fan_ho@v1"]
    for seed, name in enumerate(names, 1):
        make_lora(base, tmp_path / name, seed)
        backend.load_adapter(name, tmp_path / name)
    fast = FastPath(backend, kernels="all", vision_varlen=False)
    fast.generate([critique_request(40, adapter=names[0], max_new_tokens=8)])
    result = kernel_ablation.ablation(fast, names, rows=4, bucket=256, repeats=5)
    assert result["timing"].startswith("CUDA graph") and result["skipped"] == {}
    assert result["fast_path_untouched"] is True
    assert list(result["forward_ms"]) == ["rows1_merged", "rows4_hot", "rows4_mixed"]
    for shape, times in result["forward_ms"].items():
        assert list(times) == list(kernel_ablation.SETS) and all(ms > 0 for ms in times.values())
        for name, diff in result["logits_diff_vs_none"][shape].items():
            assert diff <= 1e-4, f"{shape} {name}: {diff}"
    profiles = result["profile_rows1"]
    assert profiles["all"]["what"] == "CUDA kernels"
    assert profiles["all"]["kernels"] > 0 and profiles["none"]["kernels"] > 0
