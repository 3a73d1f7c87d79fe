"""The scale bench's table (markdown) from the JSON files under --out: serving and training
rows at each N, with the speedup over N=1 of the same arch and part, and the efficiency
(speedup / N). A skipped or failed row says why instead of figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOAL_N2 = 1.8  # the goal at N = 2 for data parallel (both parts)


def _why(row: dict[str, Any]) -> str:
    """A skipped or failed row's reason on one line (a log's tail has many)."""
    why = " ".join(str(row.get("why", "")).split())[-300:]
    return f"{row.get('status')}: {why}".replace("|", "\\|")


def _f(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _speedup(d: dict[str, Any], part: str, n: int, metric: str) -> tuple[str, str]:
    """(speedup over N=1, efficiency); the goal is said at N=2 with data parallelism on
    the real architectures (the tiny CPU run's figures only show that the path works)."""
    rows = d["rows"]
    one, this = rows.get(f"{part}/1") or {}, rows.get(f"{part}/{n}") or {}
    base, value = one.get(metric), this.get(metric)
    if not base or value is None or one.get("status") != "ok":
        return "—", "—"
    speedup = value / base
    mark = ""
    if n == 2 and this.get("parallel", "data") == "data" and d["arch"] != "tiny":
        mark = " (goal ≥ 1.8×: " + ("met" if speedup >= GOAL_N2 else "not met") + ")"
    return f"{speedup:.2f}×{mark}", f"{speedup / n:.0%}"


def _ns(rows: dict[str, Any], part: str) -> list[int]:
    return sorted(int(k.split("/")[1]) for k in rows if k.startswith(f"{part}/"))


def serve_lines(d: dict[str, Any]) -> list[str]:
    rows = d["rows"]
    lines = [
        "| N | parallel | requests (clients, service --concurrency) | critiques/s | tok/s | "
        "p50 s | p95 s | valid | calibrated | speedup vs N=1 (critiques/s) | efficiency | "
        "vLLM ready s | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in _ns(rows, "serve"):
        r = rows[f"serve/{n}"]
        if r.get("status") != "ok":
            lines.append(f"| {n} | {_why(r)} |" + " |" * 11)
            continue
        speedup, eff = _speedup(d, "serve", n, "critiques_s")
        concurrency = r["service_concurrency"]
        lines.append(
            f"| {n} | {r['parallel']} | {r['requests']} ({r['clients']}, {concurrency}) | "
            f"{_f(r['critiques_s'], 2)} | {_f(r['tok_s'], 0)} | {_f(r['latency_p50_s'], 2)} | "
            f"{_f(r['latency_p95_s'], 2)} | {r['valid']}/{r['requests']} | "
            f"{r['calibrated']}/{r['requests']} | {speedup} | {eff} | {r['server_ready_s']} | "
            f"{r.get('loadavg_1m', '—')} |"
        )
    problems = {n: rows[f"serve/{n}"].get("problems") for n in _ns(rows, "serve")}
    lines += [f"\nserve/{n}: {p}" for n, p in problems.items() if p]
    return lines


def train_lines(d: dict[str, Any]) -> list[str]:
    rows = d["rows"]
    lines = [
        "| N | processes (device) | steps | steps/s | examples/s | validation loss | "
        "registered versions | speedup vs N=1 (examples/s) | efficiency | wall s | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in _ns(rows, "train"):
        r = rows[f"train/{n}"]
        if r.get("status") != "ok":
            lines.append(f"| {n} | {_why(r)} |" + " |" * 9)
            continue
        speedup, eff = _speedup(d, "train", n, "examples_s")
        versions = ", ".join(r["versions"]) + (" (one)" if r["one_version"] else " (not one!)")
        lines.append(
            f"| {n} | {r['processes']} ({r['device']}) | {r['steps']} | {_f(r['steps_s'], 2)} | "
            f"{_f(r['examples_s'], 2)} | {_f(r['val_loss'], 4)} | {versions} | {speedup} | "
            f"{eff} | {r['wall_s']} | {r.get('loadavg_1m', '—')} |"
        )
    return lines


def arch_lines(d: dict[str, Any]) -> list[str]:
    env, rows = d.get("env", {}), d["rows"]
    chars = next((r["text_chars"] for r in rows.values() if "text_chars" in r), "?")
    lines = [
        f"### {d['arch']} on {env.get('device')} ({env.get('gpus_seen')} GPUs seen, "
        f"{env.get('cpus')} CPUs; torch {env.get('torch')}; {env.get('date')})",
        "",
    ]
    if any(k.startswith("serve/") for k in rows):
        lines += [
            "Serving: `POST /analyze` in mode lora over 8 advisors, each with its own "
            "registered LoRA version, through `mondrian serve --backend vllm` on vLLM; the "
            f"critique schema with strings bounded at {chars} characters; stops honoured "
            "(an answer cut off by the token budget would not "
            "validate); tok/s = the service's generated-token count over the burst's wall time.",
            "",
            *serve_lines(d),
            "",
        ]
    if any(k.startswith("train/") for k in rows):
        data = d.get("dataset") or {}
        lines += [
            "Training: `torchrun --nproc_per_node N -m mondrian train`, the same data set "
            f"({data.get('train_examples', '?')} training, "
            f"{data.get('validation_examples', '?')} validation examples) and epochs at every "
            "N; steps/s from the main process's mean step (the first left out); validation "
            "loss after the last epoch.",
            "",
            *train_lines(d),
            "",
        ]
    return lines


def table(out: Path) -> str:
    lines: list[str] = []
    for path in sorted(Path(out).glob("scale_bench_*.json")):
        lines += arch_lines(json.loads(path.read_text()))
    return "\n".join(lines) + "\n"
