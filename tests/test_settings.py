"""Settings are typed, documented and overridable from the environment."""

from __future__ import annotations

from pydantic_core import PydanticUndefined

from mondrian.config import Settings, load_settings


def test_every_setting_has_a_default_and_one_line_of_help():
    for name, field in Settings.model_fields.items():
        assert field.default is not PydanticUndefined or field.default_factory, name
        assert field.description and "\n" not in field.description, name


def test_environment_and_overrides(monkeypatch):
    monkeypatch.setenv("ANALYSIS_MODE", "rag")
    monkeypatch.setenv("MONDRIAN_MAX_TEXT_CHARS", "24")
    settings = load_settings(model="some/model", backend=None)
    assert settings.analysis_mode == "rag" and settings.max_text_chars == 24
    assert settings.model == "some/model" and settings.backend == "auto"
    assert settings.fast == "auto"  # on wherever CUDA is (config.FastMode)
