"""A Hugging Face hub on loopback that serves one folder as a model repo: the endpoints
huggingface_hub's snapshot_download calls (model info, the file tree, each file's HEAD and
GET under /resolve/), and the HEAD mondrian.model_source makes to check the hub answers.
Point HF_ENDPOINT at `hub.url`."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a commit id's form: 40 hex digits


class FakeHub:
    def __init__(self, repo_id: str, folder: Path) -> None:
        self.repo_id = repo_id
        self.files = {
            p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()
        }
        self.requests: list[str] = []  # "METHOD path", in order
        self.url = ""

    def tree(self) -> list[dict[str, object]]:
        return [
            {"type": "file", "path": name, "size": p.stat().st_size, "oid": _git_oid(p)}
            for name, p in self.files.items()
        ]

    def info(self) -> dict[str, object]:
        return {
            "id": self.repo_id,
            "sha": COMMIT,
            "private": False,
            "siblings": [{"rfilename": name} for name in self.files],
        }


def _git_oid(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _handler(hub: FakeHub) -> type[http.server.BaseHTTPRequestHandler]:
    api = re.compile(rf"/api/models/{re.escape(hub.repo_id)}(/revision/[^/]+|/tree/[^/]+)?")
    resolve = re.compile(rf"/{re.escape(hub.repo_id)}/resolve/[^/]+/(.+)")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet: pytest shows stderr
            pass

        def _answer(self, body: bytes, content_type: str, extra: dict[str, str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Repo-Commit", COMMIT)
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _route(self) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            if match := api.fullmatch(path):
                value = hub.tree() if (match.group(1) or "").startswith("/tree") else hub.info()
                self._answer(json.dumps(value).encode(), "application/json", {})
            elif (match := resolve.fullmatch(path)) and match.group(1) in hub.files:
                file = hub.files[match.group(1)]
                self._answer(
                    file.read_bytes(), "application/octet-stream", {"ETag": f'"{_git_oid(file)}"'}
                )
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.send_header("X-Error-Code", "RepoNotFound")
                self.end_headers()

        do_GET = _route
        do_HEAD = _route

    return Handler


@contextmanager
def serve(repo_id: str, folder: Path) -> Iterator[FakeHub]:
    """The hub for as long as the block runs, on a free loopback port."""
    hub = FakeHub(repo_id, folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
