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
