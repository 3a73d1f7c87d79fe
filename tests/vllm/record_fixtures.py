"""Record the vLLM server's answers that tests/backends/vllm/ replays (the default suite
runs without a server). Run against a server started as tests/vllm/conftest.py starts one:

    python tests/vllm/record_fixtures.py URL ADVISOR_PHOTO BIG_RANK_ADAPTER OUT_DIR

Each fixture is the response as received: status, the headers that matter, the body (a
streamed one as its list of chunks). To keep them small, positions that are neither a
score digit nor the one after it keep only their top-1 alternative (calibration reads no
other position, backends/vllm/answer.py), `bytes` fields are dropped, and the chunk fields
the backend does not read (id, created, ...) are kept on the first chunk only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

from mondrian.advisors.loader import get_shipped
from mondrian.backends.protocol import GenerationRequest
from mondrian.backends.vllm.request import chat_payload
from mondrian.images import read_image_file
from mondrian.prompts import critique_prompt
from mondrian.schema import generation_schema, longest_answer

TEXT_CHARS, LIST_ITEMS = 24, 2


def payload(photo: Path, model: str, top: int = 20) -> dict[str, Any]:
    ansel = get_shipped("ansel")
    request = GenerationRequest(prompt=critique_prompt(ansel, read_image_file(photo).image))
    body = chat_payload(
        request,
        model=model,
        max_tokens=len(longest_answer(TEXT_CHARS, LIST_ITEMS)) + 1,
        schema=generation_schema(TEXT_CHARS, LIST_ITEMS),
        max_pixels=1280 * 28 * 28,
    )
    body["top_logprobs"] = top
    return body


def response(r: httpx.Response) -> dict[str, Any]:
    kept = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "retry-after")}
    try:
        body: Any = r.json()
    except ValueError:
        body = r.text
    return {"status": r.status_code, "headers": kept, "body": body}


def streamed(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    chunks = []
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunks.append(json.loads(line[5:]))
    return {"status": 200, "chunks": _trimmed(chunks)}


def _trimmed(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entries = [
        e
        for c in chunks
        for choice in c.get("choices") or []
        for e in (choice.get("logprobs") or {}).get("content") or []
    ]
    text = "".join(e["token"] for e in entries)
    scores: set[int] = set()
    position = 0
    for index, entry in enumerate(entries):
        if text[:position].endswith('"score":'):
            scores.add(index)
        position += len(entry["token"])
    keep = scores | {i + 1 for i in scores}
    for chunk in chunks[1:]:
        for unread in ("id", "object", "created", "model", "prompt_token_ids", "prompt_text"):
            chunk.pop(unread, None)
    for index, entry in enumerate(entries):
        entry.pop("bytes", None)
        for alt in entry.get("top_logprobs") or []:
            alt.pop("bytes", None)
        if index not in keep:
            entry["top_logprobs"] = entry["top_logprobs"][:1]
    return chunks


def main(url: str, photo: str, big_rank_adapter: str, out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    client = httpx.Client(base_url=url, timeout=600)
    fixtures = {
        "models": response(client.get("/v1/models")),
        "stream_baseline": streamed(client, payload(Path(photo), "tiny")),
        "stream_top5": streamed(client, payload(Path(photo), "tiny", top=5)),
        "unknown_lora": response(
            client.post("/v1/chat/completions", json=payload(Path(photo), "nobody@v9"))
        ),
        "load_lora_rank": response(
            client.post(
                "/v1/load_lora_adapter",
                json={"lora_name": "big@v1", "lora_path": big_rank_adapter},
            )
        ),
        # What a server without runtime LoRA updating answers: the route is not there.
        "no_route": response(client.post("/v1/no_such_route", json={})),
    }
    for name, value in fixtures.items():
        text = json.dumps(value, indent=1 if "chunks" not in value else None)
        (folder / f"{name}.json").write_text(text + "\n")
        print(name, (folder / f"{name}.json").stat().st_size)


if __name__ == "__main__":
    main(*sys.argv[1:])
