"""Which Triton decode kernels the fast path asks for: the `fast_kernels` setting
(MONDRIAN_FAST_KERNELS; config.py) takes auto, all, none, a comma list of names, and the
booleans it took before; kernels/decode.py turns a value into names (`chosen`, `AUTO`) and
names into `DecodeKernels`; the fast path checks only the kernels asked for, and the
backend's `info()` says which run. tests/backends/test_kernels.py checks the kernels
themselves; tests/bench/test_kernel_ablation.py runs each one alone in a decode step."""

from __future__ import annotations

import pytest

from mondrian.cli.main import main
from mondrian.config import FAST_KERNEL_NAMES, load_settings
from mondrian.errors import InvalidInput


@pytest.mark.parametrize(
    ("given", "value"),
    [
        ("auto", "auto"),
        ("all", "all"),
        ("on", "all"),
        ("1", "all"),
        ("true", "all"),
        (True, "all"),
        ("none", "none"),
        ("off", "none"),
        ("0", "none"),
        (False, "none"),
        ("rope_kv", "rope_kv"),
        (" Decode_Attention , norm_linear ", "norm_linear,decode_attention"),
        ("decode_attention,rope_kv,norm_linear", "norm_linear,rope_kv,decode_attention"),
        (
            "residual_linear,decode_attention,rope_kv,norm_linear",
            "norm_linear,rope_kv,decode_attention,residual_linear",
        ),
        ("tuned_gemv,residual_linear,decode_attention,rope_kv,norm_linear", "all"),
        (["rope_kv", "norm_linear"], "norm_linear,rope_kv"),
    ],
)
def test_the_setting_takes_names_and_the_old_booleans(mondrian_home, given, value):
    assert load_settings(fast_kernels=given).fast_kernels == value


def test_auto_is_the_default_and_the_environment_is_read(mondrian_home, monkeypatch):
    assert load_settings().fast_kernels == "auto"
    monkeypatch.setenv("MONDRIAN_FAST_KERNELS", "decode_attention")
    assert load_settings().fast_kernels == "decode_attention"


@pytest.mark.parametrize("bad", ["rope", "norm_linear,flash", "", " , "])
def test_an_unknown_kernel_is_a_config_error_listing_the_valid_ones(mondrian_home, bad):
    with pytest.raises(InvalidInput, match="fast_kernels") as info:
        load_settings(fast_kernels=bad)
    message = str(info.value)
    assert all(name in message for name in ("auto", "all", "none", *FAST_KERNEL_NAMES))
    if bad.strip(" ,"):
        assert repr(bad.split(",")[-1]) in message  # the unknown name itself


def test_a_bad_environment_value_is_a_one_line_cli_error(mondrian_home, monkeypatch, capsys):
    monkeypatch.setenv("MONDRIAN_FAST_KERNELS", "attention")
    assert main(["advisors", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mondrian: error:") and "'attention'" in err
    assert "\n" not in err and "Traceback" not in err


def test_chosen_and_decode_kernels_from_names():
    from mondrian.backends.transformers.engine.kernels.decode import (
        AUTO,
        NAMES,
        DecodeKernels,
        chosen,
    )

    assert set(NAMES) == set(FAST_KERNEL_NAMES) and set(NAMES) >= AUTO
    assert chosen("auto") == AUTO and chosen(True) == chosen("all") == set(NAMES)
    assert chosen("none") == chosen(False) == frozenset()
    assert chosen("rope_kv, decode_attention") == {"rope_kv", "decode_attention"}
    valid = "norm_linear, rope_kv, decode_attention, residual_linear, tuned_gemv"
    with pytest.raises(ValueError, match=valid):
        chosen("rope")
    kernels = DecodeKernels.of(["decode_attention"])
    assert kernels.names == {"decode_attention"}
    assert kernels.projection() is None and kernels.rope_kv() is None  # not asked for
    with pytest.raises(ValueError, match="unknown decode kernel"):
        DecodeKernels.of(["rope_kv", "flash"])


@pytest.mark.model
def test_the_fast_path_checks_and_uses_only_the_kernels_asked_for(backend, monkeypatch):
    pytest.importorskip("triton")
    from mondrian.backends.transformers.engine import fast_path

    asked: list[set[str]] = []

    def passing(device, dtype, dims, names):  # the device check, without running a kernel
        asked.append(set(names))
        return frozenset(names) - {"decode_attention"}  # as if that one failed here

    monkeypatch.setattr(fast_path, "passing", passing)
    options = dict(cuda_graphs=False, compile=False, vision_varlen=False)
    fast = fast_path.FastPath(backend, kernels="rope_kv,decode_attention", **options)
    assert asked == [{"rope_kv", "decode_attention"}]
    assert fast.kernels is not None and fast.kernels.names == {"rope_kv"}
    assert fast_path.FastPath(backend, kernels=["norm_linear"], **options).kernels.names == {
        "norm_linear"
    }
    asked.clear()
    for off in ("none", False):
        assert fast_path.FastPath(backend, kernels=off, **options).kernels is None
    # On the CPU the backend's setting is not used (the kernels would run interpreted).
    assert fast_path.FastPath(backend, **options).kernels is None and asked == []
    with pytest.raises(ValueError, match="unknown decode kernel"):
        fast_path.FastPath(backend, kernels=["flash"], **options)

    assert backend.info()["fast_kernels"] == []  # the stock path runs none
    monkeypatch.setattr(backend, "fast_path", fast)
    assert backend.info()["fast_kernels"] == ["rope_kv"]
