"""The fast path (backends/transformers/engine/fast_path.py) gives the stock path's greedy tokens.

On the tiny checkpoint in float32 on the CPU, without CUDA graphs or compilation: the same
functions the GPU captures, run eagerly. Constrained and unconstrained, base and adapters
(one adapter merged into the weights; a batch mixing adapters through the stacked bank)."""

from __future__ import annotations

import pytest
from backend_helpers import assert_text_is_the_critique

from generation_helpers import critique_request, make_lora, same_as_stock
from mondrian.backends.protocol import GenerationRequest, Joining
from mondrian.backends.transformers.engine.fast_path import MAX_ROWS
from mondrian.schema import DIMENSIONS

pytestmark = pytest.mark.model

TEXT_CHARS = 8
LIST_ITEMS = 1
SHORT = 48  # most cases stop here: the first score is written by then; keeps the test fast


@pytest.fixture(scope="module")
def paths(tiny_checkpoint_factory, tmp_path_factory):
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath

    base_dir = tiny_checkpoint_factory()
    backend = TransformersBackend(
        str(base_dir), device="cpu", max_text_chars=TEXT_CHARS, max_list_items=LIST_ITEMS
    )
    root = tmp_path_factory.mktemp("fast-adapters")
    for name, seed in (("ansel@v1", 1), ("fan_ho@v1", 2)):
        make_lora(base_dir, root / name, seed)
        backend.load_adapter(name, root / name)
    fast = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    return backend, fast


def test_a_whole_constrained_critique_with_an_adapter_matches(paths):
    backend, fast = paths
    (result,) = same_as_stock(backend, fast, [critique_request(0, adapter="ansel@v1")])
    assert result.stopped
    assert_text_is_the_critique(result.text, result.critique, TEXT_CHARS, LIST_ITEMS)
    assert set(result.expected_scores) == set(DIMENSIONS)


def test_base_and_unconstrained_rows_match_the_stock_tokens(paths):
    backend, fast = paths
    for adapter in (None, "fan_ho@v1"):
        for constrained in (True, False):
            request = critique_request(
                1, adapter=adapter, constrained=constrained, max_new_tokens=SHORT
            )
            (result,) = same_as_stock(backend, fast, [request])
            assert result.new_tokens == SHORT


def test_a_batch_mixing_adapters_and_modes_matches(paths):
    backend, fast = paths
    requests = [
        critique_request(2, adapter="ansel@v1", max_new_tokens=SHORT),
        critique_request(3, adapter=None, constrained=False, max_new_tokens=SHORT // 2),
        critique_request(4, adapter="fan_ho@v1", max_new_tokens=SHORT),
    ]
    results = same_as_stock(backend, fast, requests)
    assert [r.new_tokens for r in results] == [SHORT, SHORT // 2, SHORT]
    # Each row of the mixed batch is the request on its own (its adapter, no other).
    alone = fast.generate([requests[2]])
    assert alone[0].text == results[2].text


def test_the_merged_weights_return_to_the_base_after_an_adapter(paths):
    import torch

    _, fast = paths
    fast.generate([critique_request(0, adapter="ansel@v1", max_new_tokens=2)])
    assert fast.bank.hot == "ansel@v1"
    fast.switch(None)
    layer = fast.lm.layers[0]
    q = layer.module("q_proj").base_layer.weight
    assert torch.equal(layer.qkv_w[: q.shape[0]], q)


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen3_vl"])
def test_the_other_architectures_match_the_stock_tokens(arch, tiny_checkpoint_factory):
    # Qwen2-VL: the same text model, another vision tower; Qwen3-VL: q/k norms,
    # interleaved multimodal rotary positions and deepstack vision features.
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath

    backend = TransformersBackend(
        str(tiny_checkpoint_factory(arch)),
        device="cpu",
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )
    fast = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    requests = [
        critique_request(5, max_new_tokens=SHORT),
        critique_request(6, constrained=False, max_new_tokens=SHORT // 2),
    ]
    same_as_stock(backend, fast, requests)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def test_the_prefill_logits_equal_the_models_own(arch, tiny_checkpoint_factory):
    # Closer than tokens: the whole prompt pass (image features merged, 3-D rotary
    # positions, Qwen3-VL's deepstack features; leaving those out moves these logits by
    # ~4e-2) against the transformers forward on the same inputs.
    import torch

    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath

    backend = TransformersBackend(
        str(tiny_checkpoint_factory(arch)),
        device="cpu",
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )
    fast = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    prepared = fast.preparer.prepare(critique_request(7))
    state = fast.state_for(1, prepared.length + 1, False)
    with torch.inference_mode():
        fast.prefiller.prefill(state, [0], [prepared], [None], fast.bank)
        reference = backend.base(**prepared.inputs).logits[0, -1]
    assert torch.allclose(state.logits[0], reference, atol=1e-4, rtol=0)


def test_a_packed_prefill_equals_each_prompt_alone(paths):
    # Three prompts of different lengths in one pass (attention within each, K/V written
    # to their own rows, LoRA scaled per token): the logits and caches of single passes.
    import torch

    _, fast = paths
    fast.sync_adapters()
    requests = [
        critique_request(8, adapter="ansel@v1"),
        critique_request(9),
        critique_request(10, adapter="fan_ho@v1"),
    ]
    prepared = [fast.preparer.prepare(r) for r in requests]
    assert len({p.length for p in prepared}) == 3
    slots = [fast.bank.slot_of(r.adapter) if r.adapter else None for r in requests]
    fast.bank.merge(None)
    longest = max(p.length for p in prepared)
    packed = fast.state_for(3, longest + 1, True)
    single = fast.state_for(1, longest + 1, True)
    with torch.inference_mode():
        fast.prefiller.prefill(packed, [0, 1, 2], prepared, slots, fast.bank)
        for row, (p, slot) in enumerate(zip(prepared, slots, strict=True)):
            fast.prefiller.prefill(single, [0], [p], [slot], fast.bank)
            assert torch.allclose(packed.logits[row], single.logits[0], atol=1e-4, rtol=0)
            assert int(packed.cache_pos[row]) == p.length
            assert int(packed.rope_pos[row]) == int(single.rope_pos[0])
            for k_packed, k_single in zip(packed.k, single.k, strict=True):
                assert torch.allclose(
                    k_packed[row, :, : p.length], k_single[0, :, : p.length], atol=1e-5, rtol=0
                )


def test_one_processor_call_cut_into_requests_equals_one_call_each(paths):
    import torch

    from mondrian.prompts import Prompt

    _, fast = paths
    requests = [
        critique_request(11),
        GenerationRequest(prompt=Prompt(system="s", user="u")),
        critique_request(12),
    ]
    together = fast.preparer.prepare_all(requests)
    for request, got in zip(requests, together, strict=True):
        alone = fast.preparer.prepare(request)
        assert got.length == alone.length
        for key in ("input_ids", "pixel_values", "image_grid_thw"):
            if key in alone.inputs:
                assert torch.equal(got.inputs[key], alone.inputs[key]), key
            else:
                assert key not in got.inputs, key


def test_the_preparers_cpu_positions_equal_the_models_own_on_its_inputs(paths):
    """prepare.py computes each prompt's 3-D rotary positions on the CPU tensors before
    they move: they equal the model's get_rope_index on the prepared tensors, the
    prefill's computation before (an image prompt's, a text prompt's, cut from one call)."""
    import torch

    from mondrian.backends.transformers.engine.prepare import RopeIndex
    from mondrian.prompts import Prompt

    _, fast = paths
    requests = [critique_request(13), GenerationRequest(prompt=Prompt(system="s", user="u"))]
    rope = RopeIndex(fast.backend.base, fast.lm.image_token_id)
    for p in fast.preparer.prepare_all(requests):
        assert p.pos3 is not None and p.pos3.shape == (3, 1, p.length)
        want, delta = rope.positions(p.input_ids, p.inputs)
        assert torch.equal(p.pos3, want) and p.delta == delta
    image, text = fast.preparer.prepare_all(requests)
    assert image.delta < 0 and text.delta == 0  # an image takes fewer positions than tokens


def test_lora_rows_fused_below_the_weight_equal_a_separate_product():
    import torch

    from mondrian.backends.transformers.engine.lm import lora_linear

    torch.manual_seed(0)
    rows, tokens, fan_in, out, slots, rank = 3, 2, 16, 12, 4, 2
    x = torch.randn(rows, tokens, fan_in)
    w, a, b = (
        torch.randn(out, fan_in),
        torch.randn(slots * rank, fan_in),
        torch.randn(out, slots * rank),
    )
    bias = torch.randn(out)
    rowscale = torch.zeros(rows, slots)
    rowscale[0, 1], rowscale[2, 3] = 2.0, 0.5  # row 1: the base model
    separate = lora_linear(x, w, bias, a, b, rowscale, out)
    fused = lora_linear(
        x, torch.cat([w, a]), torch.cat([bias, torch.zeros(slots * rank)]), None, b, rowscale, out
    )
    expected = x @ w.T + bias
    expected[0] += 2.0 * (x[0] @ a[2:4].T) @ b[:, 2:4].T
    expected[2] += 0.5 * (x[2] @ a[6:8].T) @ b[:, 6:8].T
    assert torch.allclose(separate, expected, atol=1e-4)
    assert torch.allclose(fused, expected, atol=1e-4)


def test_requests_taken_into_a_running_batch_match_them_alone(paths):
    # Continuous batching: a batch of three runs in four rows; between two steps it takes a
    # waiting request into the free row and, as rows finish, the next. Every row's text and
    # scores equal the request's own run. A request for an adapter the bank does not hold
    # is not taken, and what waits behind it keeps its place. (max_rows 4: no growing here;
    # the next tests grow.)
    _, fast = paths
    fast.max_rows = 4
    first = [
        critique_request(13, adapter="ansel@v1", max_new_tokens=8),
        critique_request(14, adapter="fan_ho@v1", max_new_tokens=SHORT),
        critique_request(15, max_new_tokens=SHORT),
    ]
    joining = [
        critique_request(16, adapter="fan_ho@v1", max_new_tokens=SHORT // 2),
        critique_request(17, adapter="ansel@v1", constrained=False, max_new_tokens=12),
    ]
    stuck = [
        critique_request(18, adapter="nobody@v0", max_new_tokens=4),
        critique_request(19, max_new_tokens=6),
    ]
    alone = [fast.generate([r], mixed=True)[0] for r in first + joining]
    waiting = joining + stuck
    offers: list[int] = []

    def admit(free, take):
        offers.append(free)
        taken = []
        while waiting and len(taken) < free and take(waiting[0]):
            taken.append(waiting.pop(0))
        return taken

    delivered = {}
    try:
        got = fast.generate(first, joining=Joining(admit, delivered.__setitem__))
    finally:
        fast.max_rows = MAX_ROWS
    assert offers[0] == 1, "three rows in a batch of four leave one free"
    assert waiting == stuck
    assert sorted(delivered) == [0, 1, 2, 3, 4]
    assert [delivered[i] for i in range(3)] == got
    for result, reference in zip([delivered[i] for i in range(5)], alone, strict=True):
        assert result.text == reference.text
        assert result.new_tokens == reference.new_tokens
        assert result.expected_scores == pytest.approx(reference.expected_scores, abs=1e-4)


def test_a_batch_started_with_one_row_grows_to_take_three_more(paths):
    # Growing batches: a lone request runs in a one-row state; three arrive mid-decode,
    # more than its free rows (none), so the batch moves into a four-row state (its cache,
    # positions and probe ring copied across) and takes all three at once. Every row,
    # the first one too, gives the tokens and scores of its own run.
    _, fast = paths
    lone = critique_request(22, adapter="ansel@v1", max_new_tokens=SHORT)
    later = [
        critique_request(23, adapter="ansel@v1", max_new_tokens=SHORT // 2),
        critique_request(24, adapter="ansel@v1", constrained=False, max_new_tokens=12),
        critique_request(25, adapter="ansel@v1", max_new_tokens=SHORT),
    ]
    alone = [fast.generate([r])[0] for r in [lone, *later]]
    offers: list[int] = []

    def admit(free, take):
        offers.append(free)
        if len(offers) == 4 and all(take(r) for r in later):  # mid-decode: after step 3
            return list(later)
        return []

    delivered = {}
    fast.generate([lone], joining=Joining(admit, delivered.__setitem__))
    assert offers[0] == fast.max_rows - 1, "a growing batch offers up to max_rows"
    assert sorted(delivered) == [0, 1, 2, 3]
    for result, reference in zip([delivered[i] for i in range(4)], alone, strict=True):
        assert result.text == reference.text
        assert result.new_tokens == reference.new_tokens
        assert result.expected_scores == pytest.approx(reference.expected_scores, abs=1e-4)
    assert (1, False) in {(k[0], k[2]) for k in fast.states.by_key}
    assert (4, False) in {(k[0], k[2]) for k in fast.states.by_key}


def test_a_merged_batch_moves_into_the_mixed_mode_for_another_adapter(paths):
    # A lone request runs on its adapter merged into the weights; requests for the other
    # adapter and for the base arrive mid-decode. The batch moves into the stacked-adapter
    # (mixed) state between two steps instead of keeping them waiting for it to end, and
    # every row, the first one too, gives the tokens and scores of its own run.
    _, fast = paths
    lone = critique_request(40, adapter="ansel@v1", max_new_tokens=SHORT)
    later = [
        critique_request(41, adapter="fan_ho@v1", max_new_tokens=SHORT // 2),
        critique_request(42, adapter=None, max_new_tokens=12),
    ]
    alone = [fast.generate([r])[0] for r in [lone, *later]]
    moves = fast.mode_moves
    offers: list[int] = []

    def admit(free, take):
        offers.append(free)
        if len(offers) == 3 and all(take(r) for r in later):  # mid-decode: after step 2
            return list(later)
        return []

    delivered = {}
    fast.generate([lone], joining=Joining(admit, delivered.__setitem__))
    assert fast.mode_moves == moves + 1, "the merged batch moved into the mixed mode once"
    assert fast.bank is not None and fast.bank.hot is None, "the merge was undone for it"
    assert sorted(delivered) == [0, 1, 2]
    for result, reference in zip([delivered[i] for i in range(3)], alone, strict=True):
        assert result.text == reference.text
        assert result.new_tokens == reference.new_tokens
        assert result.expected_scores == pytest.approx(reference.expected_scores, abs=1e-4)
    assert any(k[0] == 4 and k[2] for k in fast.states.by_key), "a mixed state of 4 rows"


def test_a_growing_mixed_batch_and_a_longer_cache(paths, monkeypatch):
    # The stacked-adapter state grows too (its row scales carried), and a request that
    # needs more positions than the cache holds moves the batch into a longer state
    # (the capacity step is cut to one bucket here so that a longer answer needs one).
    # Rows are compared with their runs alone, as everywhere here; float32 products of 2
    # and 4 rows round differently (~3e-6 in a logit), so a prompt whose greedy choice is
    # a tie that close (seed 27's, at its fifth token) would differ without any bug.
    from mondrian.backends.transformers.engine import state as state_module

    _, fast = paths
    monkeypatch.setattr(state_module, "CAPACITY_STEP", state_module.BUCKET)
    first = [
        critique_request(30, adapter="fan_ho@v1", max_new_tokens=6),
        critique_request(31, adapter="ansel@v1", max_new_tokens=SHORT // 2),
    ]
    extra = state_module.BUCKET  # at least one bucket past the first state's length
    longer = critique_request(32, adapter=None, constrained=False, max_new_tokens=extra)
    prepared = fast.preparer.prepare(longer)
    later = [longer, critique_request(33, adapter="fan_ho@v1", max_new_tokens=SHORT // 2)]
    alone = [fast.generate([r], mixed=True)[0] for r in first + later]
    admitted: list[int] = []

    def admit(free, take):
        if not admitted and all(take(r) for r in later):
            admitted.append(len(later))
            return list(later)
        return []

    delivered = {}
    fast.generate(first, joining=Joining(admit, delivered.__setitem__))
    assert sorted(delivered) == [0, 1, 2, 3]
    for i, reference in enumerate(alone):
        assert delivered[i].text == reference.text, f"row {i}"
        assert delivered[i].new_tokens == reference.new_tokens, f"row {i}"
        assert delivered[i].expected_scores == pytest.approx(reference.expected_scores, abs=1e-4)
    longest = max(fast.preparer.prepare(r).length for r in first)
    started = state_module.round_up(longest + SHORT // 2 + 1, state_module.BUCKET)
    needed = prepared.length + extra
    assert needed > started, "the longer answer does not fit the first state"
    assert any(k[0] == 4 and k[2] and k[1] >= needed for k in fast.states.by_key)


def test_a_lone_request_makes_room_for_those_on_their_way(paths, monkeypatch):
    _, fast = paths
    grown = []
    grow = fast.grow
    monkeypatch.setattr(fast, "grow", lambda *a: grown.append(a[1]) or grow(*a))
    lone, joining = critique_request(20, max_new_tokens=6), critique_request(21, max_new_tokens=4)
    reference = fast.generate([joining])[0].text
    offers: list[int] = []

    def admit(free, take):
        offers.append(free)
        return [joining] if len(offers) == 1 and take(joining) else []

    delivered = {}
    fast.generate([lone], joining=Joining(admit, delivered.__setitem__, rows_hint=2))
    # Two rows from the start: the one on its way takes the free row (no growing).
    assert offers[0] == fast.max_rows - 1 and delivered[1].text == reference
    assert grown == []


def test_the_real_vocabulary_matches_the_stock_tokens(tiny_checkpoint_factory, tmp_path):
    # Qwen's real BPE (151,936 head rows, tied to the embedding; 151,665 tokenizer ids):
    # anything sized by the tokenizer instead of the head, or a grammar mask cut short,
    # shows up here as other tokens. A whole critique with an adapter (merged), one
    # without, and an unconstrained row, in one batch.
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath

    base_dir = tiny_checkpoint_factory(vocab="real")
    backend = TransformersBackend(
        str(base_dir),
        device="cpu",
        max_pixels=64 * 28 * 28,
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )
    make_lora(base_dir, tmp_path / "ansel@v1", 1)
    backend.load_adapter("ansel@v1", tmp_path / "ansel@v1")
    fast = FastPath(backend, cuda_graphs=False, compile=False, vision_varlen=False)
    requests = [
        critique_request(0, adapter="ansel@v1"),
        critique_request(1, max_new_tokens=SHORT),
        critique_request(2, constrained=False, max_new_tokens=SHORT // 2),
    ]
    results = same_as_stock(backend, fast, requests)
    assert results[0].critique is not None and results[0].stopped
    assert [r.new_tokens for r in results[1:]] == [SHORT, SHORT // 2]


def test_prefill_groups_keep_order_and_their_token_bound():
    from mondrian.backends.transformers.engine.prefill import token_groups

    assert token_groups([5, 5, 5], 10) == [[0, 1], [2]]
    assert token_groups([20, 3, 3], 10) == [[0], [1, 2]]  # too long alone: its own group
    assert token_groups([3, 3, 3, 1], 9) == [[0, 1, 2], [3]]
    assert token_groups([], 10) == []


def test_warm_up_compiles_one_graph_for_one_row_and_one_for_every_batch_above(paths, monkeypatch):
    # The decode halves through dynamo (its plain "eager" backend: the graphs without
    # inductor's code generation, quick on the CPU): `warm_up` compiles one row and two
    # rows, merged and mixed, before the first batch; batches of 4 and 8 rows after it
    # reuse the two-row graphs (the batch axis dynamic), so a growing batch compiles
    # nothing more. The answers stay the stock path's.
    import functools

    import torch
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    from mondrian.backends.transformers.engine.fast_path import FastPath
    from mondrian.backends.transformers.engine.state import BUCKET

    backend, _ = paths
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    dynamo.reset()
    counters.clear()
    fast = FastPath(backend, cuda_graphs=False, compile=True, vision_varlen=False)
    requests = [critique_request(50, adapter="ansel@v1", max_new_tokens=6)]
    same_as_stock(backend, fast, requests)  # warms up first
    assert fast.warmed == {False, True}  # merged and mixed: the adapters were resident
    assert {(1, False), (2, False), (1, True), (2, True)} <= {
        (k[0], k[2]) for k in fast.states.by_key
    }
    warmed = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        for rows in (4, 8):
            for mixed in (False, True):
                st = fast.state_for(rows, BUCKET, mixed)
                fast.step.forward(st, BUCKET, fast.bank)
    assert counters["stats"]["unique_graphs"] == warmed, "a bigger batch compiled again"
    # The prompt pass was warmed in the mixed mode too: a batch over two adapters (its
    # prefill takes the stacked LoRA) compiles nothing more either.
    mixed = [
        critique_request(51, adapter="ansel@v1", max_new_tokens=6),
        critique_request(52, adapter="fan_ho@v1", max_new_tokens=6),
    ]
    same_as_stock(backend, fast, mixed)
    assert counters["stats"]["unique_graphs"] == warmed, "the mixed prompt pass compiled"
    dynamo.reset()


def test_the_mixed_mode_is_warmed_once_an_adapter_is_resident(
    tiny_checkpoint_factory, tmp_path, monkeypatch
):
    """A server whose first request comes before any adapter is loaded warms the merged
    mode then, and the mixed one (decode and prompt pass) at the first call after an
    adapter is resident: before that call's batch, not while a batch grows into it."""
    import functools

    import torch
    import torch._dynamo as dynamo

    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.backends.transformers.engine.fast_path import FastPath
    from mondrian.prompts import Prompt

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    dynamo.reset()
    base_dir = tiny_checkpoint_factory()
    backend = TransformersBackend(
        str(base_dir),
        device="cpu",
        max_text_chars=TEXT_CHARS,
        max_list_items=LIST_ITEMS,
    )
    fast = FastPath(backend, cuda_graphs=False, compile=True, vision_varlen=False)
    request = GenerationRequest(prompt=Prompt(system="s", user="u"), max_new_tokens=2)
    fast.generate([request])
    assert fast.warmed == {False}  # no adapter yet: nothing to mix
    calls = []
    monkeypatch.setattr(fast.prefiller, "prefill", lambda *a: calls.append(a[0].mixed))
    monkeypatch.setattr(fast.step, "forward", lambda st, *a: calls.append(st.mixed))
    make_lora(base_dir, tmp_path / "ansel@v1", 1)
    backend.load_adapter("ansel@v1", tmp_path / "ansel@v1")
    fast.warm_up()
    assert fast.warmed == {False, True} and calls == [True, True, True]  # 2 decode, 1 prompt
    calls.clear()
    fast.warm_up()
    assert calls == []  # each mode once
    dynamo.reset()
