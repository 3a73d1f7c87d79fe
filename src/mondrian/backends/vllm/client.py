"""The HTTP side of the vllm backend: vLLM's OpenAI-compatible server through httpx.

Every fault the server or the network can cause becomes one `MondrianError` saying what
happened and where, so a job fails with a sentence, never a traceback:

| what                                   | error                  | HTTP (service) |
|----------------------------------------|------------------------|----------------|
| connection refused, broken mid-answer  | `ServerFault` unreachable | 503 + Retry-After |
| no answer within `vllm_timeout_s`      | `ServerFault` timeout  | 503 + Retry-After |
| 5xx, 429 (a full server queue)         | `ServerFault` busy/error | 503 + Retry-After |
| an unknown model or LoRA name (404)    | `NotFound`             | 404            |
| a request the server refuses (400)     | `InvalidInput` with the server's text | 422 |
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from mondrian.errors import InvalidInput, MondrianError, NotFound, Unavailable

# Seconds a client is told to wait before retrying a job the server could not take.
RETRY_AFTER_S = 5


class ServerFault(Unavailable):
    """The vLLM server is unreachable, slow, overloaded or failing: the job can be retried
    (the service answers 503 with `Retry-After`, service/errors.py)."""

    def __init__(self, message: str, *, code: str, retry_after: int = RETRY_AFTER_S) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


def server_message(response: httpx.Response) -> str:
    """The server's own words: vLLM's `{"error": {"message"}}`, its older
    `{"object": "error", "message"}`, FastAPI's `{"detail"}`, else the text (bounded)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])[:500]
    return json.dumps(body)[:500]


class VLLMClient:
    """One server: its base URL (`http://host:port`, with or without `/v1`)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 300.0,
        api_key: str | None = None,
        connections: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Connecting is quick or hopeless; reading waits for the model (timeout_s between
        # two streamed chunks, so a long answer that keeps streaming never times out).
        timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        self.http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=connections),
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    # --- calls -----------------------------------------------------------------------------

    def health(self) -> None:
        """Nothing when the server answers its /health with 200, else a ServerFault."""
        self._send("GET", "/health", timeout=5.0)

    def models(self) -> list[dict[str, Any]]:
        """`/v1/models`' entries: the base model (`parent` None) and the LoRAs on it."""
        data = self._send("GET", "/v1/models", timeout=10.0).json()
        return list(data.get("data", []))

    def load_lora(self, name: str, path: str) -> httpx.Response:
        """POST /v1/load_lora_adapter; the response whatever its status (the caller reads a
        404: runtime loading is off, a 400: the server refused this adapter)."""
        return self._send(
            "POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}, ok=False
        )

    def unload_lora(self, name: str) -> httpx.Response:
        return self._send("POST", "/v1/unload_lora_adapter", json={"lora_name": name}, ok=False)

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The chunks of a streamed chat completion, as they arrive. Closing the iterator
        closes the connection, which makes vLLM abort the request."""
        try:
            with self.http.stream("POST", "/v1/chat/completions", json=payload) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refusal(response, payload.get("model"))
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk or chunk.get("object") == "error":
                        raise ServerFault(
                            f"the vLLM server at {self.url} failed mid-answer: "
                            f"{_chunk_error(chunk)}",
                            code="backend_error",
                        )
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._fault(exc, "/v1/chat/completions") from None

    # --- faults ----------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, ok: bool = True, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._fault(exc, path) from None
        if ok and response.status_code >= 400:
            raise self._refusal(response, None)
        return response

    def _fault(self, exc: httpx.HTTPError, path: str) -> ServerFault:
        where = f"the vLLM server at {self.url}"
        if isinstance(exc, httpx.TimeoutException):
            message = f"{where} did not answer {path} in time ({exc})"
            return ServerFault(message, code="backend_timeout")
        if isinstance(exc, httpx.ConnectError):
            return ServerFault(
                f"{where} cannot be reached ({exc}); is it running?", code="backend_unreachable"
            )
        # The connection broke: the server died or restarted mid-answer.
        return ServerFault(
            f"the connection to {where} broke ({type(exc).__name__}: {exc})",
            code="backend_unreachable",
        )

    def _refusal(self, response: httpx.Response, model: object) -> MondrianError:
        status = response.status_code
        message = server_message(response)
        where = f"the vLLM server at {self.url}"
        if status == 404 and model is not None:
            return NotFound(
                f"{where} serves no model or LoRA named {model!r}: {message}",
                code="not_on_server",
            )
        if status in (429, 503) or status >= 500:
            retry = response.headers.get("Retry-After", "")
            return ServerFault(
                f"{where} answered {status}: {message}",
                code="backend_busy" if status in (429, 503) else "backend_error",
                retry_after=int(retry) if retry.isdigit() else RETRY_AFTER_S,
            )
        if status in (401, 403):
            return Unavailable(f"{where} refused the API key ({status}): {message}")
        return InvalidInput(f"{where} refused the request ({status}): {message}")


def _chunk_error(chunk: dict[str, Any]) -> str:
    error = chunk.get("error")
    if isinstance(error, dict):
        return str(error.get("message", error))[:500]
    return str(chunk.get("message", chunk))[:500]
