"""The vllm backend against recorded answers of a real vLLM CPU server (fixtures/, from
tests/vllm/record_fixtures.py): requests, critiques, calibration, adapters and faults,
without a server. tests/vllm/ runs the same against a live one (marker `vllm`)."""

from __future__ import annotations

import base64
import html
import io
import json
import math

import httpx
import pytest
from PIL import Image
from replay import URL, Replay, fixture, recorded, stream_response

from mondrian.advisors.loader import get_shipped
from mondrian.backends.protocol import Backend, GenerationRequest, Joining
from mondrian.backends.vllm.backend import VLLMBackend
from mondrian.backends.vllm.client import ServerFault, VLLMClient
from mondrian.errors import InvalidInput, NotFound, Unavailable
from mondrian.images import fit_pixels, read_image_file
from mondrian.prompts import critique_prompt
from mondrian.reports import render_detailed
from mondrian.schema import DIMENSIONS, AnalysisResult, Critique, ModelInfo, generation_schema


def make_backend(replay: Replay, model: str | None = None, **options) -> VLLMBackend:
    client = VLLMClient(URL, timeout_s=5, transport=replay.transport)
    return VLLMBackend(model, client=client, max_text_chars=24, max_list_items=2, **options)


@pytest.fixture
def photo(photos_dir):
    return read_image_file(photos_dir / "chelsea.jpg")


@pytest.fixture
def request_(photo) -> GenerationRequest:
    return GenerationRequest(prompt=critique_prompt(get_shipped("ansel"), photo.image))


def entries(name: str) -> list[dict]:
    return [
        e
        for c in fixture(name)["chunks"]
        for choice in c.get("choices") or []
        for e in (choice.get("logprobs") or {}).get("content") or []
    ]


def expected_from_logprobs(name: str) -> dict[str, float]:
    """The calibration rule, written out again over the recorded logprobs."""
    found = entries(name)
    text, starts = "", []
    for e in found:
        starts.append(len(text))
        text += e["token"]
    out = {}
    for key in DIMENSIONS:
        at = text.index(f'"{key}":{{"score":') + len(f'"{key}":{{"score":')
        i = starts.index(at)
        top = {t["token"]: t["logprob"] for t in found[i]["top_logprobs"]}
        weights = [math.exp(top[str(d)]) for d in range(10)]
        p = [w / sum(weights) for w in weights] + [0.0]
        if found[i]["token"] == "1":
            nxt = found[i + 1]["top_logprobs"]
            p[10] = p[1] * sum(math.exp(t["logprob"]) for t in nxt if t["token"].startswith("0"))
            p[1] -= p[10]
        out[key] = round(sum(k * q for k, q in enumerate(p)), 4)
    return out


# --- the backend and its requests --------------------------------------------------------


def test_it_takes_the_servers_model_and_is_a_backend():
    backend = make_backend(Replay())
    assert isinstance(backend, Backend)
    assert (backend.name, backend.model_id, backend.served) == ("vllm", "/tmp/hv/tiny", "tiny")
    assert backend.admits is True and backend.answer_budget > 100


def test_a_model_the_server_does_not_serve_is_refused_naming_both():
    with pytest.raises(InvalidInput, match=r"serves '/tmp/hv/tiny'.*not 'Qwen/Qwen2.5-VL-3B"):
        make_backend(Replay(), "Qwen/Qwen2.5-VL-3B-Instruct")
    assert make_backend(Replay(), "tiny").served == "tiny"  # its served name does


def test_the_request_is_the_generation_rule_with_the_photo_as_fitted_png(request_, photo):
    replay = Replay()
    backend = make_backend(replay, max_pixels=64 * 64)
    backend.generate([request_])
    (body,) = replay.chats()
    assert body["model"] == "tiny" and body["stream"] is True
    assert (body["temperature"], body["top_p"], body["repetition_penalty"]) == (0.0, 1.0, 1.0)
    assert body["max_tokens"] == backend.answer_budget
    assert (body["logprobs"], body["top_logprobs"]) == (True, 20)
    assert body["response_format"]["json_schema"]["schema"] == generation_schema(24, 2)
    system, user = body["messages"]
    assert system == {"role": "system", "content": request_.prompt.system}
    image_part, text_part = user["content"]
    assert text_part == {"type": "text", "text": request_.prompt.user}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    fitted = fit_pixels(photo.image, 64 * 64)
    assert sent.size == fitted.size and sent.tobytes() == fitted.convert("RGB").tobytes()


def test_an_unconstrained_request_sends_no_schema(request_):
    replay = Replay()
    request_.constrained = False
    make_backend(replay).generate([request_])
    assert "response_format" not in replay.chats()[0]


# --- answers and calibration -------------------------------------------------------------


def test_the_recorded_answer_is_a_valid_critique_with_its_logprob_expectation(request_):
    (generation,) = make_backend(Replay()).generate([request_])
    assert generation.error is None and generation.critique is not None
    assert generation.stopped and (generation.prompt_tokens, generation.new_tokens) == (625, 367)
    assert generation.expected_scores == expected_from_logprobs("stream_baseline")
    assert generation.uncalibrated == {}
    for key, dim in generation.critique.dimensions.items():
        assert dim.expected_score == generation.expected_scores[key]
        assert sum(generation.score_distributions[key]) == pytest.approx(1.0)


def test_digits_missing_from_the_top_logprobs_leave_the_score_uncalibrated(request_):
    replay = Replay()
    replay.chat = lambda _b: stream_response(fixture("stream_top5")["chunks"])
    (generation,) = make_backend(replay).generate([request_])
    assert generation.critique is not None and generation.expected_scores == {}
    assert set(generation.uncalibrated) == set(DIMENSIONS)
    assert "not among the server's 5 top logprobs" in generation.uncalibrated["lighting"]
    assert all(d.expected_score is None for _, d in generation.critique.dimensions.items())
    # The reason travels in the critique, the result users get, not only in the log.
    for key, dim in generation.critique.dimensions.items():
        assert dim.expected_score_unavailable == generation.uncalibrated[key]
    dumped = generation.critique.scored().model_dump(mode="json")
    assert "5 top logprobs" in dumped["dimensions"]["lighting"]["expected_score_unavailable"]
    # and the detailed report says so where it shows an expected score
    result = AnalysisResult(
        advisor_id="ansel",
        mode_requested="baseline",
        mode_used="baseline",
        model=ModelInfo(base="/tmp/hv/tiny", backend="vllm", engine="vllm"),
        critique=generation.critique.scored(),
    )
    page = render_detailed(result, get_shipped("ansel"))
    assert page.count("expected score unavailable") == len(DIMENSIONS)
    assert f'title="{generation.uncalibrated["lighting"]}"' in html.unescape(page)


def test_a_calibrated_answer_says_no_reason_and_older_results_still_read(request_):
    (generation,) = make_backend(Replay()).generate([request_])
    assert all(
        d.expected_score_unavailable is None for _, d in generation.critique.dimensions.items()
    )
    older = generation.critique.model_dump(mode="json")  # a result stored before the field
    for dim in older["dimensions"].values():
        del dim["expected_score_unavailable"]
    assert Critique.model_validate(older) == generation.critique
    # a computed field: the model never writes it (the grammar leaves it out)
    assert "expected_score_unavailable" not in json.dumps(generation_schema())


def test_an_answer_cut_off_is_an_error_with_the_servers_text_never_repaired(request_):
    chunks = fixture("stream_baseline")["chunks"][:40]
    chunks[-1]["choices"][0]["finish_reason"] = "length"
    replay = Replay()
    replay.chat = lambda _b: stream_response(chunks)
    (generation,) = make_backend(replay).generate([request_])
    assert generation.critique is None and not generation.stopped
    assert generation.error.startswith("the answer was cut off at its limit of")
    assert "the server's text: '{\"image_description\"" in generation.error


def test_tokens_are_reported_as_they_stream(request_):
    counts: list[tuple[int, int]] = []
    make_backend(Replay()).generate([request_], on_token=lambda i, n: counts.append((i, n)))
    assert counts[-1] == (0, 367) and [n for _, n in counts] == sorted(n for _, n in counts)


# --- concurrency -------------------------------------------------------------------------


def test_requests_are_in_flight_together_up_to_max_rows_and_waiting_ones_join(request_):
    replay = Replay()
    replay.delay_s = 0.2
    backend = make_backend(replay, max_rows=2)
    waiting = [request_, request_]
    delivered: dict[int, object] = {}

    def admit(free, take):
        taken = [r for r in waiting[:free] if take(r)]
        del waiting[: len(taken)]
        return taken

    joining = Joining(admit, lambda i, g: delivered.__setitem__(i, g))
    results = backend.generate([request_, request_, request_], joining=joining)
    assert len(results) == 3 and all(g.critique is not None for g in results)
    assert sorted(delivered) == [0, 1, 2, 3, 4] and not waiting
    assert replay.most_in_flight == 2


# --- faults ------------------------------------------------------------------------------


def _raise(exc: Exception):
    def handler(*_args):
        raise exc

    return handler


def _answer(status: int, **kwargs):
    return lambda _body: httpx.Response(status, **kwargs)


@pytest.mark.parametrize(
    ("answer", "code", "words"),
    [
        (_raise(httpx.ConnectError("refused")), "backend_unreachable", "cannot be reached"),
        (_raise(httpx.ReadTimeout("slow")), "backend_timeout", "did not answer"),
        (_raise(httpx.RemoteProtocolError("gone")), "backend_unreachable", "broke"),
        (
            lambda _b: httpx.Response(500, json={"error": {"message": "boom"}}),
            "backend_error",
            "500: boom",
        ),
        (
            lambda _b: httpx.Response(503, headers={"Retry-After": "7"}, text="full"),
            "backend_busy",
            "503",
        ),
    ],
)
def test_server_faults_are_retryable_errors_saying_what_happened(request_, answer, code, words):
    replay = Replay()
    backend = make_backend(replay)
    replay.chat = answer
    with pytest.raises(ServerFault) as caught:
        backend.generate([request_])
    assert caught.value.code == code and words in caught.value.message
    assert URL in caught.value.message and caught.value.http_status == 503
    assert caught.value.retry_after == (7 if code == "backend_busy" else 5)
    assert backend.info()["state"] == "ok"  # /health still answers


def test_after_a_failure_no_further_request_is_sent(request_):
    replay = Replay()
    backend = make_backend(replay, max_rows=1)
    replay.chat = _answer(500, json={"error": {"message": "boom"}})
    with pytest.raises(ServerFault, match="boom"):
        backend.generate([request_, request_, request_])
    assert len(replay.chats()) == 1


def test_an_error_chunk_mid_answer_fails_the_request(request_):
    chunks = [*fixture("stream_baseline")["chunks"][:20], {"error": {"message": "engine died"}}]
    replay = Replay()
    replay.chat = lambda _b: stream_response(chunks)
    with pytest.raises(ServerFault, match="failed mid-answer: engine died"):
        make_backend(replay).generate([request_])


def test_the_health_state_says_why_the_server_cannot_serve():
    replay = Replay()
    backend = make_backend(replay)
    replay.health = _raise(httpx.ConnectError("refused"))
    state = backend.info()["state"]
    assert state.startswith("backend_unreachable: the vLLM server at") and URL in state


def test_a_server_that_refuses_at_start_is_a_clear_error():
    replay = Replay()
    replay.transport = httpx.MockTransport(_raise(httpx.ConnectError("refused")))
    with pytest.raises(ServerFault, match="cannot be reached"):
        make_backend(replay)


# --- adapters ----------------------------------------------------------------------------


def _adapter(tmp_path, base: str, rank: int = 4):
    from mondrian import adapter_format
    from mondrian.adapter_format import AdapterMeta

    folder = tmp_path / f"adapter-{rank}"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    adapter_format.write_meta(folder, AdapterMeta(base_model=base))
    return folder


def test_an_adapter_is_loaded_on_the_server_under_its_version_name(tmp_path, request_):
    replay = Replay()
    backend = make_backend(replay)
    path = _adapter(tmp_path, "/tmp/hv/tiny")
    backend.load_adapter("ansel@v2", path)
    loads = [b for m, p, b in replay.sent if p == "/v1/load_lora_adapter"]
    assert loads == [{"lora_name": "ansel@v2", "lora_path": str(path.resolve())}]
    assert backend.adapters() == ["ansel@v2"]
    request_.adapter = "ansel@v2"
    backend.generate([request_])
    assert replay.chats()[-1]["model"] == "ansel@v2"


def test_an_adapter_the_server_already_serves_is_not_loaded_again(tmp_path):
    replay = Replay()  # the recorded /v1/models lists ansel@v1 (--lora-modules)
    make_backend(replay).load_adapter("ansel@v1", _adapter(tmp_path, "/tmp/hv/tiny"))
    assert not [p for _, p, _ in replay.sent if p == "/v1/load_lora_adapter"]


def test_an_adapter_of_another_base_is_refused_naming_both(tmp_path):
    backend = make_backend(Replay())
    with pytest.raises(InvalidInput) as caught:
        backend.load_adapter("ansel@v3", _adapter(tmp_path, "Qwen/Qwen2.5-VL-7B-Instruct"))
    message = caught.value.message
    assert "'Qwen/Qwen2.5-VL-7B-Instruct'" in message and "'/tmp/hv/tiny'" in message
    assert backend.adapters() == []


def test_a_rank_above_the_servers_is_a_clear_error(tmp_path):
    replay = Replay()
    replay.load = lambda _b: recorded("load_lora_rank")  # vLLM answers this with a 500
    with pytest.raises(InvalidInput, match=r"rank 32.*--max-lora-rank 32") as caught:
        make_backend(replay).load_adapter("big@v1", _adapter(tmp_path, "/tmp/hv/tiny", 32))
    assert "greater than max_lora_rank 8" in caught.value.message


def test_without_runtime_loading_the_error_gives_the_lora_modules_flag(tmp_path):
    replay = Replay()
    replay.load = lambda _b: recorded("no_route")
    path = _adapter(tmp_path, "/tmp/hv/tiny")
    with pytest.raises(Unavailable) as caught:
        make_backend(replay).load_adapter("ansel@v2", path)
    assert caught.value.code == "adapter_not_on_server"
    assert f"--lora-modules ansel@v2={path.resolve()}" in caught.value.message
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in caught.value.message


def test_a_lora_the_server_forgot_is_loaded_again_once(tmp_path, request_):
    replay = Replay()
    backend = make_backend(replay)
    backend.load_adapter("ansel@v2", _adapter(tmp_path, "/tmp/hv/tiny"))
    answers = iter([recorded("unknown_lora")])
    replay.chat = lambda b: (
        next(answers, None) or stream_response(fixture("stream_baseline")["chunks"])
    )
    (generation,) = backend.generate([dataclass_copy(request_, adapter="ansel@v2")])
    assert generation.critique is not None
    assert len([p for _, p, _ in replay.sent if p == "/v1/load_lora_adapter"]) == 2


def test_an_unknown_lora_name_is_not_found_with_the_servers_words(request_):
    replay = Replay()
    backend = make_backend(replay)
    replay.chat = lambda _b: recorded("unknown_lora")
    with pytest.raises(NotFound, match="does not exist"):
        backend.generate([request_])
    with pytest.raises(NotFound, match="not loaded"):
        backend.generate([dataclass_copy(request_, adapter="ansel@v9")])


def dataclass_copy(request: GenerationRequest, **changes) -> GenerationRequest:
    import dataclasses

    return dataclasses.replace(request, **changes)


def test_merge_and_embeddings_say_what_the_backend_does_instead():
    backend = make_backend(Replay())
    with pytest.raises(Unavailable, match="profile similarity alone"):
        backend.embed_images([Image.new("RGB", (8, 8))])
    with pytest.raises(Unavailable, match="adapters merge"):
        backend.merge_adapter("ansel@v1")


def test_the_client_takes_a_url_with_or_without_v1():
    assert VLLMClient("http://h:8000/v1/").url == "http://h:8000"
