"""A vLLM server made of recorded answers (fixtures/, written by
tests/vllm/record_fixtures.py from a real vLLM CPU server): an httpx transport that
replays them, records what it was sent, and can be told to fail in the ways a real server
or network does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).resolve().parent / "fixtures"
URL = "http://vllm.test:8000"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def recorded(name: str) -> httpx.Response:
    data = fixture(name)
    body = data["body"]
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return httpx.Response(data["status"], headers=data["headers"], content=content)


def sse(chunks: list[dict[str, Any]]) -> bytes:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def stream_response(chunks: list[dict[str, Any]]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse(chunks))


class Replay:
    """`Replay().transport` for a VLLMClient. `chat` decides each chat answer (default: the
    recorded baseline stream); `sent` holds every (method, path, json body)."""

    def __init__(self, models: dict[str, Any] | None = None) -> None:
        self.models = models or fixture("models")["body"]
        self.sent: list[tuple[str, str, Any]] = []
        self.chat: Callable[[dict[str, Any]], httpx.Response] = lambda _body: stream_response(
            fixture("stream_baseline")["chunks"]
        )
        self.load: Callable[[dict[str, Any]], httpx.Response] = lambda _body: httpx.Response(
            200, text="Success: LoRA adapter added successfully."
        )
        self.health: Callable[[], httpx.Response] = lambda: httpx.Response(200)
        self.in_flight = 0
        self.most_in_flight = 0
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, request.url.path, body))
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json=self.models)
        if path == "/health":
            return self.health()
        if path == "/v1/load_lora_adapter":
            return self.load(body)
        if path == "/v1/unload_lora_adapter":
            return httpx.Response(200, text="Success")
        if path == "/v1/chat/completions":
            with self._lock:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                time.sleep(self.delay_s)
                return self.chat(body)
            finally:
                with self._lock:
                    self.in_flight -= 1
        return recorded("no_route")

    def chats(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.sent if path == "/v1/chat/completions"]
