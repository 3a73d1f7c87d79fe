"""The vllm backend: Mondrian drives a vLLM server (its OpenAI-compatible API) and keeps
what it adds: the generation schema, validated critiques, calibrated scores, adapter
versions. Nothing heavy is imported (no torch, no transformers): the model is the server's.

- `model_id` is what the server loaded (`/v1/models`' root: a hub id or a folder), so
  jobs, profiles and records name the model as the other backends do;
- requests of one `generate` call go to the server at once (it batches them itself);
  with `joining` (the service's batcher, service/batching.py) waiting requests join as
  soon as one of `max_rows` in flight finishes: `admits` is True;
- adapters: backends/vllm/adapters.py; a runtime-loaded LoRA the server forgot (it
  restarted) is loaded again once, on the first request that names it;
- embeddings: none. vLLM serves generation, not the vision tower's pooled features;
  `embed_images` raises `Unavailable`, and rag ranks by profile similarity alone
  (strategies/rag.py, portfolio/retrieval.py; docs/vllm.md).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from PIL import Image

from mondrian import adapter_format
from mondrian.backends.protocol import (
    Generation,
    GenerationRequest,
    Joining,
    TokenCallback,
    check_loaded,
)
from mondrian.backends.vllm import adapters as lora
from mondrian.backends.vllm.answer import read_stream, to_generation
from mondrian.backends.vllm.client import ServerFault, VLLMClient
from mondrian.backends.vllm.request import chat_payload
from mondrian.errors import InvalidInput, MondrianError, NotFound, Unavailable
from mondrian.schema import generation_schema, longest_answer

log = logging.getLogger(__name__)

NO_EMBEDDINGS = (
    "the vllm backend computes no image embeddings; rag ranks by profile similarity alone"
)


class VLLMBackend:
    name = "vllm"
    admits = True  # requests join the ones in flight (the server batches them)
    model_id: str  # the Protocol's data member, set in __init__

    def __init__(
        self,
        model_id: str | None,
        *,
        vllm_url: str | None = None,
        timeout_s: float = 300.0,
        api_key: str | None = None,
        max_rows: int = 64,
        device: str = "auto",
        dtype: str = "auto",
        max_pixels: int = 1280 * 28 * 28,
        max_text_chars: int | None = None,
        max_list_items: int | None = None,
        client: VLLMClient | None = None,
    ) -> None:
        """`model_id` None takes the server's model; a name must be the server's (its
        served name or the hub id or folder it loaded). `device`/`dtype` are the server's
        business: anything but auto is refused rather than ignored."""
        if client is None and not vllm_url:
            raise InvalidInput(
                "the vllm backend needs the server's address: --vllm-url URL or MONDRIAN_VLLM_URL"
            )
        for flag, value in (("--device", device), ("--dtype", dtype)):
            if value != "auto":
                raise InvalidInput(
                    f"{flag} {value} does not apply to the vllm backend: the server chooses "
                    "(vllm serve --device/--dtype)"
                )
        self.client = client or VLLMClient(
            str(vllm_url), timeout_s=timeout_s, api_key=api_key, connections=max_rows + 4
        )
        self.max_rows = max_rows
        self.max_pixels = max_pixels
        self.schema = generation_schema(max_text_chars, max_list_items)
        # +1: the end-of-turn token after the longest JSON the schema allows.
        self._budget = len(longest_answer(max_text_chars, max_list_items)) + 1
        self.base = lora.base_entry(self.client.models())
        self.served = str(self.base["id"])  # the name requests give as "model"
        self.model_id = str(self.base.get("root") or self.served)
        if model_id is not None and not lora.same_model(model_id, self.base):
            raise InvalidInput(
                f"the vLLM server at {self.client.url} serves {self.model_id!r} (as "
                f"{self.served!r}), not {model_id!r}; pass --model {self.served} or leave it unset"
            )
        self._adapters: dict[str, Path] = {}  # name -> path, in load order
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_rows, thread_name_prefix="mondrian-vllm")
        self._state = "ok"

    @property
    def answer_budget(self) -> int:
        return self._budget

    # --- generation ----------------------------------------------------------------------

    def generate(
        self,
        requests: list[GenerationRequest],
        on_token: TokenCallback | None = None,
        *,
        joining: Joining | None = None,
    ) -> list[Generation]:
        """All requests in flight at once, up to `max_rows`; with `joining`, waiting ones
        are admitted as rows free up, and each result is delivered when it arrives. The
        first failure is raised once the others have finished (or, for an interruption
        from a token callback, at once)."""
        check_loaded(requests, self.adapters())
        queue = list(requests)
        results: list[Generation | None] = [None] * len(requests)
        running: dict[Future[Generation], int] = {}
        stop = threading.Event()
        failure: BaseException | None = None
        total = len(requests)

        def start(index: int, request: GenerationRequest) -> None:
            relay = None if on_token is None else (lambda _r, n, i=index: on_token(i, n))
            running[self._pool.submit(self._one, request, relay, stop)] = index

        for index, request in enumerate(queue[: self.max_rows]):
            start(index, request)
        pending = list(enumerate(queue))[self.max_rows :]
        while running:
            done, _ = wait(list(running), timeout=0.05, return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                try:
                    generation = future.result()
                except BaseException as exc:
                    failure = failure or exc
                    if not isinstance(exc, Exception):  # an interruption: stop the rest
                        stop.set()
                    continue
                if index < len(results):
                    results[index] = generation
                if joining is not None:
                    joining.deliver(index, generation)
            if failure is not None:
                continue  # the call fails: start nothing more, let the running ones end
            while pending and len(running) < self.max_rows:
                start(*pending.pop(0))
            if joining is not None and len(running) < self.max_rows:
                for request in joining.admit(self.max_rows - len(running), lambda _r: True):
                    start(total, request)
                    total += 1
        if failure is not None:
            raise failure
        return [r for r in results if r is not None]

    def _one(
        self, request: GenerationRequest, on_token: TokenCallback | None, stop: threading.Event
    ) -> Generation:
        try:
            generation = self._stream(request, on_token, stop)
        except NotFound:
            if request.adapter is None or request.adapter not in self._adapters:
                raise
            # A LoRA loaded at run time is gone after a server restart: load it again, once.
            log.warning("adapter %s is no longer on the server; loading it again", request.adapter)
            lora.load_on_server(self.client, request.adapter, self._adapters[request.adapter])
            generation = self._stream(request, on_token, stop)
        except _Stopped:
            raise
        except ServerFault as exc:
            self._state = f"{exc.code}: {exc.message}"
            raise
        self._state = "ok"
        return generation

    def _stream(
        self, request: GenerationRequest, on_token: TokenCallback | None, stop: threading.Event
    ) -> Generation:
        started = time.perf_counter()
        limit = request.max_new_tokens or self._budget
        payload = chat_payload(
            request,
            model=request.adapter or self.served,
            max_tokens=limit,
            schema=self.schema,
            max_pixels=self.max_pixels,
        )
        chunks = self.client.chat_stream(payload)
        try:
            streamed = read_stream(_until(chunks, stop), on_token)
        finally:
            chunks.close()  # an interrupted answer closes its connection: vLLM aborts it
        elapsed = time.perf_counter() - started
        generation = to_generation(streamed, adapter=request.adapter, elapsed=elapsed, limit=limit)
        for key, why in generation.uncalibrated.items():
            log.warning("no expected score for %s: %s", key, why)
        return generation

    def embed_images(self, images: list[Image.Image]) -> list[list[float]]:
        raise Unavailable(NO_EMBEDDINGS)

    # --- adapters ------------------------------------------------------------------------

    def load_adapter(self, name: str, path: Path) -> None:
        path = Path(path)
        with self._lock:
            if name in self._adapters:
                return
            adapter_format.check_files(path, name)
            lora.check_base(name, path, self.base, self.client.url)
            on_server = {str(m["id"]) for m in self.client.models() if m.get("parent")}
            if name not in on_server:
                lora.load_on_server(self.client, name, path)
            self._adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self._adapters:
                raise NotFound(f"adapter {name} is not loaded")
            response = self.client.unload_lora(name)
            if response.status_code >= 400 and response.status_code != 404:
                log.warning("the server kept adapter %s (%s)", name, response.status_code)
            del self._adapters[name]

    def merge_adapter(self, name: str) -> None:
        raise Unavailable(
            f"the vllm backend cannot merge adapter {name} into the server's weights; "
            "`mondrian adapters merge` writes a merged model the server can serve"
        )

    def adapters(self) -> list[str]:
        return list(self._adapters)

    def info(self) -> dict[str, object]:
        """The server's model and, checked now (its /health, 5 s at most), its state."""
        try:
            self.client.health()
            self._state = "ok"
        except MondrianError as exc:
            self._state = f"{exc.code}: {exc.message}"
        return {
            "backend": self.name,
            "model": self.model_id,
            "fingerprint": None,
            "device": f"vllm server at {self.client.url}",
            "dtype": None,
            "adapters": self.adapters(),
            "state": self._state,
            "served_model": self.served,
        }

    def warm_up(self) -> None:
        """Nothing: the vLLM server compiled and captured its graphs when it started."""


class _Stopped(Exception):
    """Another request of the same call was interrupted: this one ends too."""


def _until(chunks: Any, stop: threading.Event) -> Any:
    """The chunks until `stop` is set."""
    for chunk in chunks:
        if stop.is_set():
            raise _Stopped
        yield chunk
