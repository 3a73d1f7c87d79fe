"""bench/scale_bench.py's serving row on a real vLLM CPU server: the tiny checkpoint, 8
advisors with registered LoRA versions, `mondrian vllm-command`'s server and `mondrian
serve --backend vllm` in front of it, and concurrent `POST /analyze` in mode lora; every
critique valid and calibrated, every child process gone at the end. Skipped without the
vLLM venv (conftest.py's `vllm_python`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from scale_runs import left_behind, run_bench

pytestmark = pytest.mark.vllm


def test_smoke_serving_on_a_vllm_cpu_server(tmp_path, vllm_python):
    data, commands = run_bench(
        tmp_path,
        *("--parts", "serve", "--gpus", "1", "--requests", "4", "--clients", "2"),
        *("--vllm-python", str(vllm_python), "--serve-reserve-s", "60"),
        timeout=900,
    )
    row = data["rows"]["serve/1"]
    assert row["status"] == "ok", row
    assert row["valid"] == row["calibrated"] == row["requests"] == 4, row
    assert row["advisors"] == 8 and row["warmup"]["valid"] == 8
    assert row["tokens"] > 0 and row["tok_s"] > 0 and row["critiques_s"] > 0
    assert row["vllm_tokens"] >= row["tokens"]  # the server counts what the service asked
    assert 0 < row["latency_p50_s"] <= row["latency_p95_s"] <= row["latency_max_s"]
    # The exact commands: vllm-command on the row's home, the server, the service.
    assert "mondrian vllm-command" in commands and "--lora-modules ansel@v1=" in commands
    assert "mondrian serve --backend vllm" in commands and "--concurrency 2" in commands
    assert "export NCCL_NVLS_ENABLE=0" in commands
    assert left_behind(tmp_path / "work") == []
