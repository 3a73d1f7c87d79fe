"""The scale bench's child processes: each started in its own session with its log, its
exact command recorded, and all of them stopped at the end, on failure and on ctrl-C too.

Every child gets `child_env()`: NVLink multicast off (backends/vllm/command.py's
NVLS_OFF_ENV) whatever the parent's environment says, so vLLM's workers and torchrun's
ranks, which inherit it, keep it off as well.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 30.0


def child_env(extra: Mapping[str, str] | None = None, *, own_src: bool = True) -> dict[str, str]:
    """The parent's environment, this checkout's src first on the path (`own_src`), no
    hub, and NVLink multicast off (set last: nothing overrides it)."""
    from mondrian.backends.vllm.command import NVLS_OFF_ENV

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if own_src:
        paths = [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    env.update(extra or {})
    env.update(NVLS_OFF_ENV)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shell_line(command: Sequence[str], env: Mapping[str, str], shown: Sequence[str]) -> str:
    """`K=V ... command` with the variables named in `shown` (those the bench set)."""
    prefix = [f"{k}={shlex.quote(env[k])}" for k in shown if k in env]
    return " ".join([*prefix, shlex.join(list(command))])


class Children:
    """`start()` children, `stop(proc)` one, `stop_all()` the rest (also from `with`)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[subprocess.Popen] = []
        self.commands: list[str] = []  # every command started, as a shell line

    def start(
        self,
        name: str,
        command: Sequence[str],
        env: dict[str, str],
        shown: Sequence[str] = (),
        stdout: Path | None = None,
    ) -> tuple[subprocess.Popen, Path]:
        """Start `command` in a session of its own, its output in LOG_DIR/NAME.log (stdout
        apart in `stdout` when given); `shown`: the variables its recorded line names."""
        log_path = self.log_dir / f"{name}.log"
        line = shell_line(command, env, shown)
        self.commands.append(line)
        print(f"  $ {line}", flush=True)
        with contextlib.ExitStack() as files:
            log = files.enter_context(log_path.open("wb"))
            out = files.enter_context(stdout.open("wb")) if stdout else log
            proc = subprocess.Popen(
                list(command),
                env=env,
                stdout=out,
                stderr=log if stdout else subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its group: workers and engine cores go with it
            )
        self.running.append(proc)
        return proc, log_path

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM to its process group, SIGKILL after STOP_GRACE_S; the group is killed
        even when the leader is gone (an engine core may outlive it)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_S)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM (the device's time limit, a kill) raises KeyboardInterrupt like ctrl-C, so
    the `finally` blocks that stop the children run."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_http(
    proc: subprocess.Popen, url: str, log_path: Path, deadline: float, what: str
) -> float:
    """Seconds until `url` answers 200; an error with the log's tail when the process
    exits or `deadline` (time.monotonic) passes first."""
    import httpx

    started = time.monotonic()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready in {time.monotonic() - started:.0f} s: {tail(log_path)}")


def tail(log_path: Path, chars: int = 2000) -> str:
    return log_path.read_bytes()[-chars:].decode(errors="replace") if log_path.exists() else ""
