"""The per-architecture facts: names are checked, budgets follow the patch sizes, and the
shipped Qwen3-VL chat template is the real one byte for byte. No model is built."""

from __future__ import annotations

import hashlib

import pytest

from mondrian.errors import InvalidInput
from mondrian.tiny.families import (
    ARCHES,
    FAMILIES,
    QWEN3_VL_CHAT_TEMPLATE,
    VOCABS,
    check_vocab,
    family,
)
from mondrian.tiny.model import HEAD_DIM
from mondrian.tiny.processor import pixel_budget

QWEN3_VL_TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"


def test_qwen3_vl_template_is_the_shipped_one():
    data = QWEN3_VL_CHAT_TEMPLATE.encode()
    assert len(data) == 5292
    assert hashlib.sha256(data).hexdigest() == QWEN3_VL_TEMPLATE_SHA256
    assert FAMILIES["qwen3_vl"].chat_template is QWEN3_VL_CHAT_TEMPLATE


def test_unknown_names_are_the_users_error():
    assert family("qwen2_vl") is FAMILIES["qwen2_vl"]
    assert [check_vocab(v) for v in VOCABS] == list(VOCABS)
    with pytest.raises(InvalidInput, match="unknown architecture 'llava'"):
        family("llava")
    with pytest.raises(InvalidInput, match="unknown vocabulary 'big'"):
        check_vocab("big")


@pytest.mark.parametrize("arch", ARCHES)
def test_pixel_budgets_and_rotary_split(arch):
    facts = FAMILIES[arch]
    # Tiny vocabulary: 4 to 64 merged tokens of (patch * 2)^2 pixels each.
    side = facts.patch_size * 2
    assert pixel_budget(arch) == (4 * side * side, 64 * side * side)
    assert pixel_budget(arch, "real") == facts.real_pixels
    assert sum(facts.mrope_section) == HEAD_DIM // 2
