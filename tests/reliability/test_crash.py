"""Crashes, against a real `mondrian serve`: a second server on the same home is refused;
training killed mid-publish leaves a staging folder that the next start removes, and the
active adapter still loads; a server killed (-9) mid-batch loses no job and leaves none
stuck: the restarted one re-runs what was running and runs what was queued."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from trust_helpers import Server, free_port, photo, wait_for_jobs

from mondrian.config import Settings
from mondrian.storage.bootstrap import open_state
from mondrian.training import registry

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.model,
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]

ADVISOR = "ansel"
JOBS = 6

# Training's last step, killed half way: the version is staged, not yet published.
PUBLISHING = textwrap.dedent(
    """
    import shutil, sys, time
    from pathlib import Path
    from mondrian.config import load_settings
    from mondrian.training import registry

    with registry.staged_version(load_settings(), sys.argv[2]) as staging:
        shutil.copytree(sys.argv[1], staging, dirs_exist_ok=True)
        print("staged", flush=True)
        time.sleep(60)
    """
)


def _publish_active_version(settings: Settings, template, base) -> None:
    with open_state(settings) as db:
        staging = registry.new_staging_dir(settings, ADVISOR)
        shutil.copytree(template, staging, dirs_exist_ok=True)
        registry.publish(db, settings, ADVISOR, staging, str(base), {}, activate=True)


def _kill_mid_publish(env: dict, template) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", PUBLISHING, str(template), ADVISOR],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout.readline().strip() == "staged"
    child.send_signal(signal.SIGKILL)
    child.wait(10)


def _staging_left(settings: Settings) -> list[str]:
    return sorted(p.name for p in (settings.adapters_dir / ADVISOR).glob(".staging-*"))


def test_crashes_lose_nothing_and_leave_nothing(tiny_model, tmp_path, random_adapter_factory):
    home = tmp_path / "home"
    settings = Settings(home=home)
    first = Server(home, tiny_model, "--concurrency", "2").wait_ready()
    try:
        template = random_adapter_factory(
            tiny_model, tmp_path / "adapter", 1, first.health()["fingerprint"]
        )
        _publish_active_version(settings, template, tiny_model)
        _kill_mid_publish(first.env, template)
        assert _staging_left(settings), "kill -9 mid-publish left its staging folder"

        # A second server on the same home is refused before it touches the jobs.
        second = subprocess.run(
            [*first.command[:6], "--port", str(free_port()), *first.command[8:]],
            env=first.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert f"already served by another mondrian serve (pid {first.pid})" in second.stderr

        with first.client() as client:
            ids = []
            for n in range(JOBS):
                mode = "lora" if n % 2 else "baseline"
                files = {"image": ("a.jpg", photo(), "image/jpeg")}
                response = client.post(
                    "/jobs", files=files, data={"advisor": ADVISOR, "mode": mode}
                )
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            deadline = time.monotonic() + 60
            while not client.get("/health").json()["queue"]["running_jobs"]:
                assert time.monotonic() < deadline, "no job started"
                time.sleep(0.05)
        first.kill()  # SIGKILL mid-batch: nothing runs its shutdown
    finally:
        first.kill()
    with sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True) as conn:
        states = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    running = {j for j, status in states.items() if status == "running"}
    assert running and set(states) == set(ids), states

    restarted = Server(home, tiny_model, "--concurrency", "2").wait_ready()
    try:
        assert _staging_left(settings) == [], "the start removes a dead writer's staging"
        with restarted.client() as client:
            final = wait_for_jobs(client, ids)
            assert {j: v["status"] for j, v in final.items()} == dict.fromkeys(ids, "done")
            for job_id in running:
                assert final[job_id]["attempts"] == 2, final[job_id]  # re-run once
            assert all(v["attempts"] <= 2 for v in final.values())
            lora = [final[j] for n, j in enumerate(ids) if n % 2]
            assert {v["adapter"] for v in lora} == {f"{ADVISOR}@v1"}, lora
            assert {v["mode_used"] for v in lora} == {"lora"}
        assert restarted.health()["status"] == "ok"
    finally:
        restarted.stop()


def test_sigterm_lets_running_jobs_finish_and_starts_no_new_one(tiny_model, tmp_path):
    home = tmp_path / "home"
    server = Server(home, tiny_model, MONDRIAN_SHUTDOWN_GRACE_S="60").wait_ready()
    try:
        with server.client() as client:
            files = {"image": ("a.jpg", photo(), "image/jpeg")}
            ids = [
                client.post("/jobs", files=files, data={"advisor": ADVISOR}).json()["id"]
                for _ in range(4)
            ]
            deadline = time.monotonic() + 60
            while not client.get("/health").json()["queue"]["running_jobs"]:
                assert time.monotonic() < deadline, "no job started"
                time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down: the exit is "killed by TERM".
        assert server.proc.wait(90) in (0, -signal.SIGTERM), server.log()
    finally:
        server.kill()
    with sqlite3.connect(f"file:{home / 'mondrian.db'}?mode=ro", uri=True) as conn:
        states = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    assert set(states) == set(ids)
    # The one running when the signal came finished within the grace period (none was cut
    # off); the rest wait, queued, for the next start.
    assert "running" not in states.values(), states
    assert "done" in states.values() and "queued" in states.values(), states
