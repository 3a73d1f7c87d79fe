"""Clients that leave `GET /jobs/{id}/events` mid-stream (service/routes/events.py), against
a real `mondrian serve`: the server stays healthy, the job still finishes, and the streams
leave no socket or thread behind."""

from __future__ import annotations

import os
import re
import socket
import time

import pytest
from trust_helpers import Server

pytestmark = [pytest.mark.reliability, pytest.mark.model]

PHOTO = os.path.join(os.path.dirname(__file__), "..", "assets", "photos", "chelsea.jpg")
LEAVERS = 20
JOB_WAIT_S = 300.0  # a bound for a hung job on a loaded machine, not a speed check
EVENT = re.compile(rb"event: \w+\ndata: [^\n]*\n\n")  # one whole event (inside a chunk)


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    home = tmp_path_factory.mktemp("sse") / "home"
    # Longer answers than the suite's default: the job runs for seconds, long enough to
    # leave its stream while it is running.
    server = Server(home, tiny_model, MONDRIAN_MAX_TEXT_CHARS="160", MONDRIAN_MAX_LIST_ITEMS="2")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def submit(server: Server) -> str:
    with open(PHOTO, "rb") as photo, server.client() as client:
        response = client.post(
            "/jobs",
            files={"image": ("chelsea.jpg", photo, "image/jpeg")},
            data={"advisor": "ansel"},
        )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def first_event_then_leave(port: int, job_id: str) -> str:
    """Open the stream on a raw socket, read up to its first event, and close the socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        sock.sendall(head.encode())
        received = b""
        while not EVENT.search(received):
            chunk = sock.recv(4096)
            assert chunk, f"the stream closed before its first event: {received!r}"
            received += chunk
    return received.decode()


def wait_done(server: Server, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_WAIT_S
    with server.client() as client:
        while time.monotonic() < deadline:
            job = client.get(f"/jobs/{job_id}").json()
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {JOB_WAIT_S:.0f} s")


def test_streams_left_mid_job_leave_nothing_behind(server):
    # Warm up: one job followed to its end, so the model, the pools and the threads a
    # stream uses all exist before the counts are taken.
    warm_job = submit(server)
    first_event_then_leave(server.port, warm_job)
    assert wait_done(server, warm_job)["status"] == "done"
    time.sleep(1)
    warm_fds, warm_threads = server.fds(), threads(server.pid)

    job_id = submit(server)
    seen = [first_event_then_leave(server.port, job_id) for _ in range(LEAVERS)]
    with server.client() as client:
        still = client.get(f"/jobs/{job_id}").json()["status"]
    # The streams were left while the job had not finished (else this test shows nothing).
    assert still in ("queued", "running"), "the job ended before its streams were left"
    assert all("event: progress" in text for text in seen)
    assert server.health()["status"] == "ok"

    job = wait_done(server, job_id)
    assert job["status"] == "done", job
    # A new client still gets the whole stream: its final event.
    final = first_event_then_leave(server.port, job_id)
    assert "event: done" in final
    time.sleep(1)  # sockets the clients closed are closed on the server's side too
    fds, count = server.fds(), threads(server.pid)
    assert fds <= warm_fds + 4, f"descriptors {warm_fds} -> {fds}: {server.fd_kinds()}"
    assert count <= warm_threads + 4, f"threads {warm_threads} -> {count}"
    assert "Traceback" not in server.log()
