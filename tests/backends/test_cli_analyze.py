"""`mondrian analyze` through the real entry point on a tiny checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from mondrian.cli.main import main
from mondrian.schema import Critique

pytestmark = pytest.mark.model


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (96, 72), (180, 120, 60)).save(path)
    return path


class _MemoryWatch(threading.Thread):
    """Samples a running process's /proc status every 10 ms: its peak anonymous memory
    (RssAnon) and the status fields at that moment."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.path = Path(f"/proc/{pid}/status")
        self.peak_anon_kib = 0
        self.at_peak: dict[str, str] = {}

    def run(self) -> None:
        while True:
            try:
                fields = dict(line.split(":", 1) for line in self.path.read_text().splitlines())
            except (OSError, ValueError):
                return  # gone (or a zombie being reaped)
            if "RssAnon" not in fields:
                return  # a zombie: no memory left to read
            anon = int(fields["RssAnon"].split()[0])
            if anon > self.peak_anon_kib:
                self.peak_anon_kib = anon
                keys = ("VmRSS", "RssAnon", "RssFile", "Threads")
                self.at_peak = {k: fields[k].strip() for k in keys if k in fields}
            time.sleep(0.01)


def _watch_memory(pid: int) -> _MemoryWatch:
    watch = _MemoryWatch(pid)
    watch.start()
    return watch


def _run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MONDRIAN_MAX_TEXT_CHARS": "24", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "mondrian", *args], capture_output=True, text=True, env=env
    )


def test_analyze_prints_json_writes_reports_and_stays_small(
    photo, tmp_path, tiny_checkpoint_factory
):
    model = tiny_checkpoint_factory()
    out = tmp_path / "reports"
    args = ["analyze", str(photo), "--advisor", "ansel", "--model", str(model)]
    args += ["--json", "--out", str(out), "--no-progress"]
    env = {**os.environ, "MONDRIAN_MAX_TEXT_CHARS": "24"}
    with (tmp_path / "stdout").open("w+") as stdout, (tmp_path / "stderr").open("w+") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "mondrian", *args], stdout=stdout, stderr=stderr, env=env
        )
        memory = _watch_memory(child.pid)
        # The child's own peak from wait4 on its pid: RUSAGE_CHILDREN would also hold any
        # earlier child of this test process.
        _, status, usage = os.wait4(child.pid, 0)
        memory.join()
        stdout.seek(0)
        stderr.seek(0)
        proc = subprocess.CompletedProcess(
            child.args, os.waitstatus_to_exitcode(status), stdout.read(), stderr.read()
        )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["advisor_id"] == "ansel"
    assert result["mode_requested"] == "baseline" and result["mode_used"] == "baseline"
    assert result["model"] == {
        "base": str(model),
        "adapter": None,
        "variant": "base",
        "backend": "transformers",
        "engine": "stock",  # `--fast auto` on a machine without CUDA
    }
    assert result["references"] == [] and result["timings"]["total_s"] > 0
    assert {"zones", "tilt", "harmony_fit"} <= {f["name"] for f in result["facts"]}
    assert isinstance(result["checks"], list)
    critique = Critique.model_validate(result["critique"])
    assert critique.overall_grade is not None
    assert all(d.expected_score is not None for _, d in critique.dimensions.items())
    # Named by the photo and the job (reports/files.py), beside the advisor's page.
    stem = f"photo-{result['job_id'][:12]}"
    for name in (f"{stem}-summary.html", f"{stem}-detailed.html", "advisor-ansel.html"):
        assert (out / name).stat().st_size > 1000
    # What the process allocated itself (model, activations, grammar, images): its peak
    # anonymous memory. The total peak adds the pages of shared libraries it mapped
    # (torch's CUDA build maps over a GiB of them), which depend on the torch build and
    # the machine more than on Mondrian: reported, not bounded.
    report = f"peak anonymous {memory.peak_anon_kib / 1024:.0f} MiB, at that moment " + (
        f"{memory.at_peak}; peak RSS (wait4) {usage.ru_maxrss / 1024:.0f} MiB"
    )
    print(f"\n{report}")
    assert 0 < memory.peak_anon_kib < 1024 * 1024, report


def test_analyze_human_output(photo, tmp_path, tiny_checkpoint_factory, capsys, monkeypatch):
    monkeypatch.setenv("MONDRIAN_MAX_TEXT_CHARS", "24")
    code = main(
        [
            "analyze",
            str(photo),
            "--advisor",
            "fan_ho",
            "--no-progress",
            "--model",
            str(tiny_checkpoint_factory()),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Fan Ho on this photo" in out and "grade" in out and "-summary.html" in out


@pytest.mark.parametrize(
    ("make", "advisor", "message"),
    [
        (lambda p: None, "ansel", "no such file"),
        (lambda p: p.write_text("not a photo"), "ansel", "not an image"),
        (lambda p: Image.new("RGB", (8, 8)).save(p, format="PNG"), "nobody", "no advisor"),
    ],
    ids=["missing-file", "not-an-image", "unknown-advisor"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, make, advisor, message):
    path = tmp_path / "input.jpg"
    make(path)
    proc = _run("analyze", str(path), "--advisor", advisor, "--model", "/nonexistent/model")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
