"""Running bench/scale_bench.py's CPU smoke mode as a subprocess, for the tests that check
it end to end (tests/bench/test_scale_bench.py, tests/vllm/test_scale_serving.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(tmp_path: Path, *flags: str, timeout: float) -> tuple[dict, str]:
    """`scale_bench.py --arch tiny FLAGS` in its own session (killed with its children if
    it outlives `timeout`); (its JSON, its commands.sh)."""
    out = tmp_path / "out"
    command = [
        sys.executable, str(ROOT / "bench" / "scale_bench.py"),
        "--arch", "tiny", "--out", str(out), "--work", str(tmp_path / "work"),
        "--budget-s", str(timeout - 60), *flags,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    print(stdout[-4000:])
    data = json.loads((out / "scale_bench_tiny.json").read_text())
    assert (out / "table.md").read_text() in stdout
    return data, (out / "commands.sh").read_text()


def left_behind(work: Path) -> list[str]:
    """Command lines of live processes that name the bench's work folder."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(work) in text:
            found.append(text)
    return found
