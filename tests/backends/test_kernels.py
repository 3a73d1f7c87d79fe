"""The decode step's Triton kernels (backends/transformers/engine/kernels/) equal their
torch references: `kernels.decode.check`, the comparison the fast path makes before it
uses them on a GPU, run here on the CPU by Triton's interpreter. The interpreter must be
chosen before Triton is first imported, so the check runs in a fresh interpreter process
(`TRITON_INTERPRET=1`). tests/gpu/test_kernels_cuda.py runs it compiled on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

CHECK = (
    "import json, torch\n"
    "from mondrian.backends.transformers.engine.kernels.decode import Dims, check\n"
    "cpu = torch.device('cpu')\n"
    "print(json.dumps([check(cpu, torch.float32), check(cpu, torch.float32, Dims(head_dim=24))]))\n"
)


def test_each_kernel_equals_its_reference_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results, odd = json.loads(done.stdout.strip().splitlines()[-1])
    triton_kernels = {"norm_linear", "rope_kv", "decode_attention", "residual_linear"}
    assert set(results) == triton_kernels | {"tuned_gemv"}
    # inductor decomposes one-row products on GPUs only: on the CPU the entry says so
    assert "needs a CUDA device" in results.pop("tuned_gemv")
    for name, error in results.items():
        assert isinstance(error, float), f"{name}: {error}"
        assert error <= 1e-5, f"{name}: {error}"  # float32: the order of sums alone
    # A head size the rotary and attention kernels cannot take fails their check (the
    # fast path then leaves them out), not a decode step.
    assert isinstance(odd["norm_linear"], float) and odd["norm_linear"] <= 1e-5
    assert isinstance(odd["residual_linear"], float) and odd["residual_linear"] <= 1e-5
    assert "power-of-two" in odd["rope_kv"] and "unsupported" in odd["decode_attention"]


def test_a_kernel_that_fails_its_check_is_left_out(monkeypatch, caplog):
    import torch

    from mondrian.backends.transformers.engine.kernels import decode

    def broken(device, dtype, dims):
        raise RuntimeError("no such instruction")

    checks = {"norm_linear": lambda *a: 0.0, "rope_kv": lambda *a: 0.5, "decode_attention": broken}
    monkeypatch.setattr(decode, "CHECKS", checks)
    with caplog.at_level("WARNING"):
        names = decode.passing(torch.device("cpu"), torch.float32)
    assert names == {"norm_linear"}  # 0.5 is over float32's tolerance; the other raised
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "rope_kv left out" in logged and "no such instruction" in logged
    kernels = decode.DecodeKernels(names)
    assert kernels.rope_kv() is None and kernels.attention() is None


E2E = """
import sys
sys.path.insert(0, {tests!r})
from generation_helpers import critique_request, make_lora, same_as_stock
from mondrian.backends.transformers.backend import TransformersBackend
from mondrian.backends.transformers.engine.fast_path import FastPath
from mondrian.tiny.checkpoint import make_tiny
from pathlib import Path

root = Path({root!r})
base = make_tiny(root / "checkpoint", "qwen2_5_vl", 0)
make_lora(base, root / "ansel@v1", 1)
make_lora(base, root / "fan_ho@v1", 2)
backend = TransformersBackend(str(base), device="cpu", max_text_chars=8, max_list_items=1)
backend.load_adapter("ansel@v1", root / "ansel@v1")
backend.load_adapter("fan_ho@v1", root / "fan_ho@v1")
fast = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False, kernels=True)
assert fast.kernels is not None and len(fast.kernels.names) == 4, fast.kernels
merged = [critique_request(0, adapter="ansel@v1", max_new_tokens=12),
          critique_request(1, constrained=False, max_new_tokens=12)]
same_as_stock(backend, fast, merged)  # base weights: every kernel, the product too
mixed = [critique_request(2, adapter="ansel@v1", max_new_tokens=12),
         critique_request(3, adapter="fan_ho@v1", max_new_tokens=12)]
same_as_stock(backend, fast, mixed)  # stacked LoRA: its product on torch, the rest kernels
print("equal")
"""


@pytest.mark.slow
@pytest.mark.model
def test_the_fast_path_through_the_kernels_gives_the_stock_tokens(tmp_path):
    # The whole decode through the four kernels, interpreted (minutes: the interpreter
    # runs each program in numpy), against transformers' generate in float32.
    from pathlib import Path

    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    script = E2E.format(tests=tests, root=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0 and "equal" in done.stdout, done.stderr[-3000:]


def test_the_grids_cover_every_multiprocessor_of_an_h200(monkeypatch):
    # At one row the q/k/v product (2,560 outputs) in blocks of 64 was 40 programs and the
    # attention of a 2,048-position bucket in 128-position splits 32, on 132
    # multiprocessors; at 32 rows both fill the device with the largest blocks.
    import torch

    from mondrian.backends.transformers.engine.kernels import decode_attention, norm_linear

    h200 = 132
    monkeypatch.setattr(norm_linear, "multiprocessors", lambda device: h200)
    monkeypatch.setattr(decode_attention, "multiprocessors", lambda device: h200)
    cuda = torch.device("cuda")
    assert norm_linear.blocks(1, 2560, cuda) == 16  # 160 programs
    assert norm_linear.blocks(32, 2560, cuda) == 16  # one 32-row tile x 160
    assert norm_linear.row_block(1) == 16 and norm_linear.row_block(32) == 32
    assert norm_linear.blocks(1, 22016, cuda) == 64  # 344 programs already
    assert decode_attention.split_for(1, 2, 2048, cuda) == 32  # 2 x 64 programs
    assert decode_attention.split_for(32, 2, 2048, cuda) == 128  # 32 x 2 x 16
    assert decode_attention.split_for(1, 2, 256, cuda) == 32  # as many as there can be
