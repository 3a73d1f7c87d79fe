"""A `GenerationRequest` as a chat completion request to vLLM.

The photo travels as a PNG data URL of the same pixels the other backends give their
processor: already upright (images.py applies the EXIF orientation when it reads a photo)
and within the pixel budget (`fit_pixels`); PNG is lossless, so the server's processor
sees those pixels exactly. The decoding rule is the project's (docs/generation.md):
greedy, no repetition penalty, at most the schema's longest answer, constrained by the
generation schema as `response_format`. The server must run with
`disable_any_whitespace` in its structured-outputs config (vLLM ignores it per request;
`mondrian vllm-command` prints a command that sets it).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from mondrian.backends.protocol import GenerationRequest
from mondrian.images import fit_pixels
from mondrian.prompts import Prompt

# vLLM's default (and the OpenAI API's) ceiling for top_logprobs: the ten digits are
# among them at a score position unless the model's own probabilities put ten other
# tokens above one of them (then the expected score is unavailable, backends/vllm/answer.py).
TOP_LOGPROBS = 20


def data_url(image: Image.Image, max_pixels: int) -> str:
    """The image, fitted to the pixel budget, as a PNG data URL."""
    fitted = fit_pixels(image, max_pixels)
    if fitted.mode not in ("RGB", "L"):
        fitted = fitted.convert("RGB")
    buffer = io.BytesIO()
    fitted.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_messages(prompt: Prompt, max_pixels: int) -> list[dict[str, Any]]:
    """The OpenAI form of `Prompt.messages()`: the images before the text, as there."""
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": data_url(image, max_pixels)}}
        for image in prompt.images
    ]
    content.append({"type": "text", "text": prompt.user})
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": content},
    ]


def chat_payload(
    request: GenerationRequest,
    *,
    model: str,
    max_tokens: int,
    schema: dict[str, Any],
    max_pixels: int,
) -> dict[str, Any]:
    """The body of POST /v1/chat/completions for one request (streamed, with logprobs)."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": chat_messages(request.prompt, max_pixels),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "top_p": 1.0,
        "n": 1,
        # vLLM's own sampling extras: greedy means none of these may reshape the logits,
        # whatever the checkpoint's generation_config.json says.
        "top_k": -1,
        "repetition_penalty": 1.0,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.constrained:
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "critique", "schema": schema, "strict": True},
        }
    return payload
