"""bench/vllm_bench.py's accumulated results without a server or a model: how one call's
rows go over an earlier file's (bench/vllm_table.py's merge), the table that says which
machine measured what, and the command line's choice of columns and rows."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from backend_fakes import SleepyBackend

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import vllm_table  # noqa: E402  (bench/ is not a package)


def call(column: str, at: str, uuid: str = "GPU-1", host: str = "h200-a") -> dict:
    return {
        "id": f"{column}@{at}",
        "at": at,
        "host": host,
        "gpu": "NVIDIA H200",
        "gpu_uuid": uuid,
        "settings": {"text_chars": 40, "free_tokens": 600, "repeats": 3},
    }


def row(tok_s: float, call_id: str, **extra) -> dict:
    return {"s": 1.0, "rows": 1, "tokens": int(tok_s), "tok_s": tok_s, "call": call_id, **extra}


def one_call(column: str, at: str, rows: dict, **machine) -> dict:
    c = call(column, at, **machine)
    return {
        "arch": "qwen2_5_vl_3b",
        "columns": {
            column: {"calls": [c], "rows": {k: {**v, "call": c["id"]} for k, v in rows.items()}}
        },
    }


def test_a_call_adds_its_column_and_keeps_the_others():
    first = vllm_table.merge(None, one_call("fast", "t1", {"b1_base_schema": row(280, "")}))
    both = vllm_table.merge(
        first, one_call("vllm_caches_off", "t2", {"b1_base_schema": row(190, "")})
    )
    assert set(both["columns"]) == {"fast", "vllm_caches_off"}
    assert both["columns"]["fast"]["rows"]["b1_base_schema"]["tok_s"] == 280
    assert first["columns"].keys() == {"fast"}  # merge copies: the earlier file is unchanged


def test_measured_rows_replace_and_a_skip_never_hides_a_measurement():
    first = one_call(
        "vllm_caches_on", "t1", {"b1_base_schema": row(150, ""), "poisson_2": row(600, "")}
    )
    merged = vllm_table.merge(None, first)
    second = one_call(
        "vllm_caches_on",
        "t2",
        {
            "b1_base_schema": row(160, ""),
            "poisson_2": {"skipped": "time budget"},
            "poisson_8": {"skipped": "time budget"},
        },
    )
    merged = vllm_table.merge(merged, second)
    rows = merged["columns"]["vllm_caches_on"]["rows"]
    assert rows["b1_base_schema"]["tok_s"] == 160 and rows["b1_base_schema"]["call"].endswith("t2")
    assert rows["poisson_2"]["tok_s"] == 600 and rows["poisson_2"]["call"].endswith("t1")
    assert rows["poisson_8"] == {"skipped": "time budget", "call": "vllm_caches_on@t2"}
    # both calls still measured a kept row: both are listed; a third that measured
    # everything again leaves only itself
    assert [c["at"] for c in merged["columns"]["vllm_caches_on"]["calls"]] == ["t1", "t2"]
    third = one_call(
        "vllm_caches_on",
        "t3",
        {"b1_base_schema": row(1, ""), "poisson_2": row(1, ""), "poisson_8": row(1, "")},
    )
    merged = vllm_table.merge(merged, third)
    assert [c["at"] for c in merged["columns"]["vllm_caches_on"]["calls"]] == ["t3"]


def test_the_table_has_all_three_columns_side_by_side_on_one_machine():
    merged = None
    for i, column in enumerate(vllm_table.COLUMNS):
        rows = {
            "b1_base_schema": row(100 + i, ""),
            "poisson_8": {
                **row(0, ""),
                "throughput_tok_s": 900.0 + i,
                "latency_p50_s": 1.0,
                "latency_p95_s": 2.0,
                "valid": 64,
                "requests": 64,
                "in_flight": {"client_peak": 32, "server_held_peak": 31.0},
            },
        }
        merged = vllm_table.merge(merged, one_call(column, f"t{i}", rows))
    text = "\n".join(vllm_table.arch_table(merged))
    assert "Every column on one machine: h200-a, NVIDIA H200 (GPU-1)." in text
    assert (
        "| b1_base_schema | 100 tok/s" in text and "| 101 tok/s" in text and "| 102 tok/s" in text
    )
    assert "| 8 req/s | 900 tok/s" in text and "902 tok/s" in text
    assert "| poisson_8 | 32 / 31 | 32 / 31 | 32 / 31 |" in text
    assert "| b32_8lora_free | — | — | — |" in text  # a row no call ran is shown empty


def test_the_table_warns_when_columns_come_from_different_machines():
    merged = vllm_table.merge(None, one_call("fast", "t1", {"b1_base_schema": row(280, "")}))
    merged = vllm_table.merge(
        merged, one_call("vllm_caches_on", "t2", {"b1_base_schema": row(150, "")}, uuid="GPU-2")
    )
    text = "\n".join(vllm_table.arch_table(merged))
    assert "Warning: the columns come from 2 machines" in text and "GPU-2" in text


def test_the_first_runs_file_still_reads():
    """bench/results/2026-12-01-h200-vllm's JSON, written before calls accumulated."""
    path = BENCH / "results" / "2026-12-01-h200-vllm" / "vllm_bench_qwen2_5_vl_3b.json"
    old = json.loads(path.read_text())
    text = "\n".join(vllm_table.arch_table(old))
    assert "| b1_base_schema | 280 tok/s" in text and "| 2 req/s | 706 tok/s" in text
    merged = vllm_table.merge(
        old, one_call("vllm_caches_on", "t9", {"b1_base_schema": row(170, "")})
    )
    assert merged["columns"]["fast"]["rows"]["b32_8lora_free"]["tok_s"] == 3809.4
    assert merged["columns"]["vllm_caches_on"]["rows"]["b1_base_schema"]["tok_s"] == 170


def test_the_command_line_runs_only_the_chosen_columns_and_rows():
    import vllm_args

    def parse(*argv: str):
        return vllm_args.finish(vllm_args.parser("t", "out").parse_args(list(argv)))

    args = parse("--columns", "vllm_caches_on,fast", "--only-poisson")
    assert args.columns == ["fast", "vllm_caches_on"]  # the fast path first: it frees the GPU
    assert args.workloads == [] and args.poisson_rates == "2,8,32"
    args = parse("--skip-poisson", "--workloads", "b1_base_schema", "--arch", "tiny")
    assert args.poisson_rates == "" and args.workloads == ["b1_base_schema"]
    assert (args.batch, args.repeats) == (4, 1)  # the tiny smoke test's small defaults
    with pytest.raises(SystemExit, match="unknown nope"):
        parse("--columns", "nope")


def test_rows_that_do_not_fit_the_budget_are_skipped_with_why_and_the_rest_is_kept(tmp_path):
    import vllm_args
    import vllm_bench

    argv = ["--arch", "tiny", "--out", str(tmp_path), "--work", str(tmp_path / "w")]
    argv += ["--workloads", "b1_lora_free,b32_8lora_free", "--poisson-rates", "2"]
    args = vllm_args.finish(vllm_args.parser("t", "out").parse_args(argv))
    bench = vllm_bench.Bench(args)
    bench.guess = {"b1": 0.5, "b32": 30.0, "poisson": 30.0, "server": 1.0}
    bench.budget.deadline = time.monotonic() + 5.0  # 5 s left
    build = {"adapters": ["a@v1", "b@v1"], "reused": True}
    call = bench.open_call("fast", build)
    backend = SleepyBackend(0.05)
    bench.rows("fast", call, backend, None)
    saved = json.loads(bench.path.read_text())["columns"]["fast"]
    rows = saved["rows"]
    assert rows["b1_lora_free"]["tokens"] == 5 and rows["b1_lora_free"]["repeats"] == 1
    for name in ("b32_8lora_free", "poisson_2"):
        assert rows[name]["skipped"].startswith("time budget: about 30 s needed"), name
    assert backend.calls == 2  # the warm-up and one timed call: nothing of the skipped rows
    assert saved["calls"][0]["host"] and saved["calls"][0]["settings"]["batch"] == 4


def test_the_servers_gauges_are_read_by_their_exact_names():
    import vllm_serve

    # vLLM 0.32 CPU's /metrics: the waiting count is also split by reason
    page = """# HELP vllm:num_requests_running Number of requests in model execution batches.
vllm:num_requests_running{engine="0",model_name="bench"} 4.0
vllm:num_requests_waiting{engine="0",model_name="bench"} 3.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="bench",reason="capacity"} 2.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="bench",reason="deferred"} 1.0
"""
    assert vllm_serve.gauges(page) == {"running": 4.0, "waiting": 3.0}
