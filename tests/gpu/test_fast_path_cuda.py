"""The fast path's CUDA parts give the stock path's greedy tokens (backends/transformers/engine/).

tests/backends/test_fast_path.py checks the same functions eagerly on the CPU; here they run
as they do in service: decode steps replayed from CUDA graphs, the decode halves and the
prompt pass compiled, the packed prefill and the vision tower through flash varlen
attention, a batch mixing adapters through the stacked bank, continuous batching and
growing batches, and the Triton decode kernels (engine/kernels/, on by default on CUDA).

Float32 (TF32 off, tests/gpu/conftest.py) wherever the kernels allow it, and there the
tokens must be exactly the stock path's. torch's varlen flash attention has no float32
kernel, so the varlen tests run in bfloat16: there the stated tolerances are logits within
3% of the largest reference logit and the first 8 tokens of every row equal (bfloat16
rounding may flip a near-tie later on a random-weight model)."""

from __future__ import annotations

import json

import pytest

from generation_helpers import critique_request, make_lora, same_as_stock
from mondrian.backends.protocol import Joining
from mondrian.backends.transformers.engine.fast_path import MAX_ROWS
from mondrian.schema import Critique

pytestmark = pytest.mark.gpu

TEXT_CHARS = 8
LIST_ITEMS = 1
SHORT = 48
PIXELS = 64 * 28 * 28  # small images: the vision tower stays quick, the real processor too
BF16_LOGIT_TOLERANCE = 0.03  # of the largest reference logit
BF16_EQUAL_PREFIX = 8


def _backend(checkpoint, dtype: str, adapters_root=None):
    from mondrian.backends.transformers.backend import TransformersBackend

    backend = TransformersBackend(
        str(checkpoint),
        device="cuda",
        dtype=dtype,
        max_pixels=PIXELS,
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
        fast="off",  # the stock reference; each test builds the FastPath it compares
    )
    if adapters_root is not None:
        for name in ("ansel@v1", "fan_ho@v1"):
            backend.load_adapter(name, adapters_root / name)
    return backend


@pytest.fixture(scope="module")
def adapters_root(tiny_checkpoint_factory, tmp_path_factory):
    base_dir = tiny_checkpoint_factory()
    root = tmp_path_factory.mktemp("gpu-adapters")
    for name, seed in (("ansel@v1", 1), ("fan_ho@v1", 2)):
        make_lora(base_dir, root / name, seed)
    return root


@pytest.fixture(scope="module")
def fp32(tiny_checkpoint_factory, adapters_root):
    """Float32 on CUDA: graphs and compilation on (vision varlen has no float32 kernel)."""
    from mondrian.backends.transformers.engine.fast_path import FastPath

    backend = _backend(tiny_checkpoint_factory(), "float32", adapters_root)
    fast = FastPath(backend, cuda_graphs=True, compile=True, vision_varlen=False)
    assert fast.cuda_graphs and fast.compile
    return backend, fast


def test_graphs_and_compiled_passes_give_a_whole_critique(fp32):
    backend, fast = fp32
    (result,) = same_as_stock(backend, fast, [critique_request(0, adapter="ansel@v1")])
    assert result.critique is not None and result.stopped
    parsed = Critique.model_validate(json.loads(result.text))  # raises if not a critique
    assert parsed.dimensions.scores() == result.critique.dimensions.scores()
    # The compiled prompt pass ran: a compiler failure falls back to eager and says so by
    # dropping the compiled halves (backends/transformers/engine/prefill.py, Prefiller).
    assert fast.prefiller.halves is not None, "the compiled prompt pass fell back to eager"
    # Decode steps were replayed from captured graphs.
    assert any(st.forward_graphs for st in fast.states.by_key.values())
    # Through the `auto` kernels (the backend's default setting): each passed its check on
    # this GPU. (This asserted every kernel, true while `auto` was all of them and false
    # since AUTO became the measured set, kernels/decode.py: the test failed on the H200 at
    # 0d1f117, its message lost to the run's time limit; the lines above are unverified.)
    from mondrian.backends.transformers.engine.kernels.decode import AUTO

    assert fast.kernels is not None and fast.kernels.names == AUTO


def test_base_and_unconstrained_rows_under_graphs(fp32):
    backend, fast = fp32
    for adapter in (None, "fan_ho@v1"):
        for constrained in (True, False):
            request = critique_request(
                1, adapter=adapter, constrained=constrained, max_new_tokens=SHORT
            )
            (result,) = same_as_stock(backend, fast, [request])
            assert result.new_tokens == SHORT


def test_a_mixed_adapter_batch_under_graphs(fp32):
    backend, fast = fp32
    requests = [
        critique_request(2, adapter="ansel@v1", max_new_tokens=SHORT),
        critique_request(3, adapter=None, constrained=False, max_new_tokens=SHORT // 2),
        critique_request(4, adapter="fan_ho@v1", max_new_tokens=SHORT),
    ]
    results = same_as_stock(backend, fast, requests)
    assert [r.new_tokens for r in results] == [SHORT, SHORT // 2, SHORT]


def test_the_compiled_prompt_pass_equals_the_models_own_logits(fp32):
    import torch

    backend, fast = fp32
    fast.sync_adapters()
    fast.bank.merge(None)
    prepared = fast.preparer.prepare(critique_request(7))
    state = fast.state_for(1, prepared.length + 1, False)
    # The base model's own forward: the loaded adapters switched off in the PEFT layers.
    with torch.inference_mode(), backend.model.disable_adapter():
        fast.prefiller.prefill(state, [0], [prepared], [None], fast.bank)
        reference = backend.base(**prepared.inputs).logits[0, -1]
    assert fast.prefiller.halves is not None
    assert torch.allclose(state.logits[0].float(), reference.float(), atol=1e-4, rtol=0)


def test_continuous_batching_under_graphs(fp32):
    # Requests admitted into a running, graph-replayed batch equal their own runs; the
    # stock path is the reference for each.
    backend, fast = fp32
    first = [
        critique_request(13, adapter="ansel@v1", max_new_tokens=8),
        critique_request(14, adapter="fan_ho@v1", max_new_tokens=SHORT),
        critique_request(15, max_new_tokens=SHORT),
    ]
    joining = [
        critique_request(16, adapter="fan_ho@v1", max_new_tokens=SHORT // 2),
        critique_request(17, adapter="ansel@v1", constrained=False, max_new_tokens=12),
    ]
    stock = [backend.generate([r])[0] for r in first + joining]
    waiting = list(joining)
    offers: list[int] = []

    def admit(free, take):
        offers.append(free)
        taken = []
        while waiting and len(taken) < free and take(waiting[0]):
            taken.append(waiting.pop(0))
        return taken

    delivered = {}
    fast.max_rows = 4  # free rows only here; the next test grows
    try:
        fast.generate(first, joining=Joining(admit, delivered.__setitem__))
    finally:
        fast.max_rows = MAX_ROWS
    assert offers and offers[0] == 1, "three rows in a batch of four leave one free"
    assert not waiting and sorted(delivered) == [0, 1, 2, 3, 4]
    for i, reference in enumerate(stock):
        assert delivered[i].text == reference.text, f"row {i}"
        assert delivered[i].new_tokens == reference.new_tokens, f"row {i}"


def test_a_batch_grows_under_graphs(fp32):
    # A lone request's one-row state (its graphs captured) takes three more mid-decode:
    # the batch moves into a four-row state whose select graph is captured before the move
    # and whose forward graphs are captured as it reaches their buckets.
    backend, fast = fp32
    lone = critique_request(22, adapter="ansel@v1", max_new_tokens=SHORT)
    later = [
        critique_request(23, adapter="ansel@v1", max_new_tokens=SHORT // 2),
        critique_request(24, adapter="ansel@v1", constrained=False, max_new_tokens=12),
        critique_request(25, adapter="ansel@v1", max_new_tokens=SHORT),
    ]
    stock = [backend.generate([r])[0] for r in [lone, *later]]
    calls: list[int] = []

    def admit(free, take):
        calls.append(free)
        return list(later) if len(calls) == 4 and all(take(r) for r in later) else []

    delivered = {}
    fast.generate([lone], joining=Joining(admit, delivered.__setitem__))
    assert sorted(delivered) == [0, 1, 2, 3]
    for i, reference in enumerate(stock):
        assert delivered[i].text == reference.text, f"row {i}"
        assert delivered[i].new_tokens == reference.new_tokens, f"row {i}"
    grown = [st for key, st in fast.states.by_key.items() if key[0] == 4 and not key[2]]
    assert grown and grown[0].select_graph is not None and grown[0].forward_graphs


def test_a_merged_batch_moves_into_the_mixed_mode_under_graphs(fp32):
    # A lone request on its merged adapter (one-row hot state, graphs captured) takes a
    # request for the other adapter and one for the base mid-decode: the merge is undone,
    # the batch moves into a four-row mixed state (select graph captured before the move,
    # forward graphs as reached), and every row gives the stock tokens.
    backend, fast = fp32
    lone = critique_request(40, adapter="ansel@v1", max_new_tokens=SHORT)
    later = [
        critique_request(41, adapter="fan_ho@v1", max_new_tokens=SHORT // 2),
        critique_request(42, adapter=None, max_new_tokens=12),
    ]
    stock = [backend.generate([r])[0] for r in [lone, *later]]
    moves = fast.mode_moves
    calls: list[int] = []

    def admit(free, take):
        calls.append(free)
        return list(later) if len(calls) == 3 and all(take(r) for r in later) else []

    delivered = {}
    fast.generate([lone], joining=Joining(admit, delivered.__setitem__))
    assert fast.mode_moves == moves + 1
    assert sorted(delivered) == [0, 1, 2]
    for i, reference in enumerate(stock):
        assert delivered[i].text == reference.text, f"row {i}"
        assert delivered[i].new_tokens == reference.new_tokens, f"row {i}"
    moved = [st for key, st in fast.states.by_key.items() if key[0] == 4 and key[2]]
    assert moved and moved[0].select_graph is not None and moved[0].forward_graphs


def test_the_real_vocabulary_under_graphs(tiny_checkpoint_factory):
    # Qwen's own 151,643-token BPE: the grammar's bitmask over the real vocabulary and the
    # real processor's image tokens, in the captured decode.
    from mondrian.backends.transformers.engine.fast_path import FastPath

    backend = _backend(tiny_checkpoint_factory(vocab="real"), "float32")
    fast = FastPath(backend, cuda_graphs=True, compile=True, vision_varlen=False)
    requests = [
        critique_request(5, max_new_tokens=SHORT),
        critique_request(6, constrained=False, max_new_tokens=16),
    ]
    # Tokens and expected scores alike, although this checkpoint's generation_config.json
    # carries Qwen's repetition_penalty 1.05: critiques follow one rule on both paths
    # (greedy, no penalty; docs/generation.md).
    same_as_stock(backend, fast, requests, score_tolerance=1e-4)


# --- bfloat16: flash varlen attention ------------------------------------------------------


def _close(got, reference) -> tuple[bool, float]:
    worst = float((got.float() - reference.float()).abs().max())
    return worst <= BF16_LOGIT_TOLERANCE * float(reference.float().abs().max()), worst


@pytest.fixture(scope="module")
def bf16(tiny_checkpoint_factory, adapters_root):
    import torch

    from mondrian.backends.transformers.engine.vision import varlen_available

    if not varlen_available(torch.device("cuda"), torch.bfloat16):
        pytest.skip(f"torch {torch.__version__} has no torch.nn.attention.varlen.varlen_attn")
    return _backend(tiny_checkpoint_factory(), "bfloat16", adapters_root)


def test_varlen_vision_attention_equals_the_stock_tower(bf16):
    # The vision tower's windowed attention as one varlen call per block, then with the
    # compiled block halves around it, then the patch embedding as a product: the stock
    # tower's features, within tolerance.
    import torch

    from mondrian.backends.transformers.engine.fast_path import FastPath
    from mondrian.backends.transformers.engine.vision import (
        compile_vision_blocks,
        linear_patch_embed,
        patch_vision_attention,
        unpatch_vision_attention,
    )

    backend, model = bf16, bf16.base
    probe = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    unpatch_vision_attention(model)  # the probe ran the patch embedding as a product
    p = probe.preparer.prepare(critique_request(8))
    pixels, grid = p.inputs["pixel_values"], p.inputs["image_grid_thw"]

    def features() -> torch.Tensor:
        out = model.model.get_image_features(pixels, image_grid_thw=grid).pooler_output
        return torch.cat(list(out))

    try:
        with torch.inference_mode():
            stock = features()
            assert patch_vision_attention(model) > 0
            varlen = features()
            assert compile_vision_blocks(model) > 0  # Qwen2.5-VL blocks
            compiled = features()
            assert linear_patch_embed(model)
            product = features()
    finally:
        unpatch_vision_attention(model)
    for name, got in (("varlen", varlen), ("compiled", compiled), ("embed", product)):
        ok, worst = _close(got, stock)
        assert ok, f"{name} vision features differ from the stock tower's by {worst}"


def test_varlen_packed_prefill_and_tokens_in_bfloat16(bf16):
    import dataclasses

    import torch

    from mondrian.backends.transformers.engine.fast_path import FastPath
    from mondrian.backends.transformers.engine.vision import unpatch_vision_attention

    backend = bf16
    requests = [
        critique_request(9, adapter="ansel@v1"),
        critique_request(10),
        critique_request(11, adapter="fan_ho@v1"),
    ]
    short = [dataclasses.replace(r, max_new_tokens=SHORT) for r in requests]
    stock = backend.generate(short)  # before the fast path patches the vision tower
    fast = FastPath(backend)  # every CUDA part on: graphs, compile, vision varlen
    try:
        assert fast.cuda_graphs and fast.compile
        fast.sync_adapters()
        fast.bank.merge(None)
        prepared = [fast.preparer.prepare(r) for r in requests]
        assert len({p.length for p in prepared}) == 3
        slots = [fast.bank.slot_of(r.adapter) if r.adapter else None for r in requests]
        longest = max(p.length for p in prepared)
        packed = fast.state_for(3, longest + 1, True)
        single = fast.state_for(1, longest + 1, True)
        with torch.inference_mode():
            fast.prefiller.prefill(
                packed, [0, 1, 2], prepared, slots, fast.bank
            )  # one varlen pass over three
            for row, (p, slot) in enumerate(zip(prepared, slots, strict=True)):
                fast.prefiller.prefill(
                    single, [0], [p], [slot], fast.bank
                )  # one prompt: no varlen call
                ok, worst = _close(packed.logits[row], single.logits[0])
                assert ok, f"row {row}: packed logits differ by {worst}"
                assert int(packed.cache_pos[row]) == p.length
        quick = fast.generate(short)
    finally:
        unpatch_vision_attention(backend.base)
    for row, (s, q) in enumerate(zip(stock, quick, strict=True)):
        stock_ids = backend.tokenizer.encode(s.text)[:BF16_EQUAL_PREFIX]
        quick_ids = backend.tokenizer.encode(q.text)[:BF16_EQUAL_PREFIX]
        assert quick_ids == stock_ids, f"row {row}: {q.text!r} vs stock {s.text!r}"
