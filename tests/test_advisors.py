"""Advisors as data: the shipped files, the loader and its error messages."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import pytest

from mondrian.advisors import Advisor, get_shipped, load_advisor_file, shipped_advisors
from mondrian.errors import InvalidInput, NotFound
from mondrian.schema import DIMENSIONS

DATA_DIR = Path(str(files("mondrian.advisors") / "data"))
# Every file in the data directory, so a newly added advisor is covered automatically.
DATA_FILES = sorted(p for p in DATA_DIR.iterdir() if p.is_file())


def _words(text: str) -> int:
    return len(text.split())


def _sentences(text: str) -> int:
    return len(re.findall(r"[.!?](?=\s|$)", text))


@pytest.fixture
def ansel_data() -> dict:
    return json.loads((DATA_DIR / "ansel.json").read_text())


def _write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


# --- the shipped advisors ------------------------------------------------------------


def test_data_dir_is_not_empty() -> None:
    assert len(DATA_FILES) >= 3


@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: p.name)
def test_shipped_file_is_a_valid_advisor(path: Path) -> None:
    # pyproject's package-data ships advisors/data/*.json only; anything else is lost.
    assert path.suffix == ".json"
    text = path.read_text(encoding="utf-8")
    assert text.isascii(), "the generation grammar is ASCII-only; keep advisor text ASCII"
    advisor = load_advisor_file(path)
    assert advisor.id == path.stem
    assert list(advisor.weights) == list(DIMENSIONS)
    assert all(w > 0 for w in advisor.weights.values())
    assert "JSON" in advisor.voice_prompt
    assert "only" in advisor.voice_prompt.lower()
    assert 120 <= _words(advisor.voice_prompt) <= 250
    assert 3 <= _sentences(advisor.bio) <= 5
    assert any("http" in s for s in advisor.sources)
    assert len(advisor.techniques) >= 3
    assert advisor.voice_prompt.startswith(f"You are {advisor.name}")


def test_shipped_advisors_are_sorted_unique_and_include_the_core_three() -> None:
    advisors = shipped_advisors()
    ids = [a.id for a in advisors]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids)) == len(DATA_FILES)
    assert {"ansel", "cartier_bresson", "fan_ho"} <= set(ids)
    assert all(isinstance(a, Advisor) for a in advisors)


def test_weights_reflect_each_style() -> None:
    ansel = get_shipped("ansel").weights
    assert ansel["lighting"] == max(ansel.values())
    assert ansel["depth_perspective"] > ansel["color_harmony"]
    hcb = get_shipped("cartier_bresson").weights
    assert hcb["composition"] == max(hcb.values())
    assert hcb["color_harmony"] == min(hcb.values())
    assert min(hcb["emotional_impact"], hcb["visual_balance"]) > hcb["focus_sharpness"]
    fan_ho = get_shipped("fan_ho").weights
    assert fan_ho["lighting"] == max(fan_ho.values())
    assert fan_ho["emotional_impact"] > fan_ho["color_harmony"]


def test_get_shipped_returns_copies() -> None:
    first = get_shipped("ansel")
    first.weights["lighting"] = 0.0
    assert get_shipped("ansel").weights["lighting"] > 0
    shipped_advisors()[0].name = "changed"
    assert shipped_advisors()[0].name != "changed"


def test_get_shipped_unknown_lists_known_ids() -> None:
    with pytest.raises(NotFound) as info:
        get_shipped("nobody")
    assert "'nobody'" in info.value.message
    assert "ansel" in info.value.message and "fan_ho" in info.value.message


def test_get_shipped_unknown_id_is_shown_on_one_line() -> None:
    with pytest.raises(NotFound) as info:
        get_shipped("a\nb")
    assert "\n" not in info.value.message


# --- loading user files --------------------------------------------------------------


def test_loads_toml(tmp_path: Path) -> None:
    weights = "\n".join(f"{k} = {1.0 + i / 10}" for i, k in enumerate(DIMENSIONS))
    path = _write(
        tmp_path,
        "mine.toml",
        f"""
id = "mine"
name = "Me"
years = "1990-"
bio = "A photographer."
sources = ["my notebook"]
philosophy = "Look."
techniques = ["walking"]
voice_prompt = "Answer only with the JSON critique."
allows_flip = false

[weights]
{weights}
""",
    )
    advisor = load_advisor_file(path)
    assert advisor.id == "mine"
    assert advisor.allows_flip is False
    assert advisor.weights["lighting"] == pytest.approx(1.1)


def test_json_round_trip(tmp_path: Path, ansel_data: dict) -> None:
    path = _write(tmp_path, "copy.JSON", ansel_data)
    assert load_advisor_file(path) == get_shipped("ansel")


def _assert_invalid(path: Path, *fragments: str) -> str:
    with pytest.raises(InvalidInput) as info:
        load_advisor_file(path)
    message = info.value.message
    assert "\n" not in message
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_field(tmp_path: Path, ansel_data: dict) -> None:
    del ansel_data["voice_prompt"]
    _assert_invalid(_write(tmp_path, "a.json", ansel_data), "field 'voice_prompt'", "required")


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "Ansel", "", "x" * 65])
def test_bad_id(tmp_path: Path, ansel_data: dict, bad_id: str) -> None:
    ansel_data["id"] = bad_id
    _assert_invalid(_write(tmp_path, "a.json", ansel_data), "field 'id'", "pattern")


def test_weights_missing_a_dimension(tmp_path: Path, ansel_data: dict) -> None:
    del ansel_data["weights"]["lighting"]
    _assert_invalid(_write(tmp_path, "a.json", ansel_data), "field 'weights'", "['lighting']")


def test_weights_unknown_dimension(tmp_path: Path, ansel_data: dict) -> None:
    ansel_data["weights"]["sharpness"] = 1.0
    _assert_invalid(_write(tmp_path, "a.json", ansel_data), "field 'weights'", "['sharpness']")


def test_weights_must_be_finite(tmp_path: Path, ansel_data: dict) -> None:
    text = json.dumps(ansel_data).replace('"lighting": 1.6', '"lighting": NaN')
    assert "NaN" in text
    _assert_invalid(_write(tmp_path, "a.json", text), "NaN")
    weights = "\n".join(f"{k} = {'inf' if k == 'lighting' else 1}" for k in DIMENSIONS)
    toml = (
        'id = "x"\nname = "x"\nyears = "x"\nbio = "x"\nsources = ["x"]\n'
        f'philosophy = "x"\ntechniques = ["x"]\nvoice_prompt = "x"\n[weights]\n{weights}\n'
    )
    _assert_invalid(_write(tmp_path, "b.toml", toml), "field 'weights'", "lighting")


def test_unknown_field(tmp_path: Path, ansel_data: dict) -> None:
    ansel_data["portrait"] = "x.jpg"
    _assert_invalid(_write(tmp_path, "a.json", ansel_data), "field 'portrait'")


def test_every_problem_is_reported_on_one_line(tmp_path: Path) -> None:
    # All nine required fields are missing: each is named, none hidden behind "N more".
    required = [n for n, f in Advisor.model_fields.items() if f.is_required()]
    message = _assert_invalid(
        _write(tmp_path, "a.json", {}), *(f"field '{name}'" for name in required)
    )
    assert len(required) == 9 and "more" not in message and "\n" not in message


def test_every_invalid_field_of_a_nearly_right_file_is_named(
    tmp_path: Path, ansel_data: dict
) -> None:
    ansel_data.update(name="", years=1902, sources=[], techniques="one", voice_prompt=None)
    ansel_data["weights"]["lighting"] = -1
    message = _assert_invalid(_write(tmp_path, "a.json", ansel_data))
    for name in ("name", "years", "sources", "techniques", "voice_prompt", "weights"):
        assert f"field '{name}'" in message, name
    assert "bio" not in message and "philosophy" not in message


# --- the template (`mondrian advisors new`) -------------------------------------------


def test_the_template_has_every_field_and_its_help(tmp_path: Path) -> None:
    from mondrian.advisors.template import advisor_template

    text = advisor_template("weegee")
    for name, field in Advisor.model_fields.items():
        assert re.search(rf"^\[?{name}\b", text, re.M), name
        assert f"# {field.description}" in text, name


def test_the_template_is_refused_until_its_placeholders_are_filled(tmp_path: Path) -> None:
    from mondrian.advisors.template import PLACEHOLDER, advisor_template

    path = _write(tmp_path, "weegee.toml", advisor_template("weegee"))
    asked = [n for n, f in Advisor.model_fields.items() if f.is_required()]
    asked = [n for n in asked if n not in ("id", "weights")]  # the template fills those
    message = _assert_invalid(path, "placeholder", *(f"field '{n}'" for n in asked))
    assert "field 'id'" not in message and "field 'weights'" not in message
    filled = re.sub(rf'"{PLACEHOLDER}: [^"]*"', '"Arthur Fellig"', path.read_text())
    path.write_text(filled)
    advisor = load_advisor_file(path)
    assert advisor.id == "weegee" and advisor.name == "Arthur Fellig"
    assert advisor.weights == dict.fromkeys(DIMENSIONS, 1.0) and advisor.allows_flip


def test_a_placeholder_left_in_a_list_is_named(tmp_path: Path, ansel_data: dict) -> None:
    from mondrian.advisors.template import placeholder

    ansel_data["techniques"].append(placeholder("a signature technique"))
    message = _assert_invalid(_write(tmp_path, "a.json", ansel_data), "field 'techniques'")
    assert "placeholder" in message


def test_invalid_json(tmp_path: Path) -> None:
    _assert_invalid(_write(tmp_path, "a.json", '{"id": "x",\n  oops}'), "invalid JSON", "line 2")


def test_duplicate_json_key(tmp_path: Path, ansel_data: dict) -> None:
    text = json.dumps(ansel_data).replace('"id": "ansel"', '"id": "ansel", "id": "other"')
    _assert_invalid(_write(tmp_path, "a.json", text), "duplicate key 'id'")


def test_invalid_toml(tmp_path: Path) -> None:
    _assert_invalid(_write(tmp_path, "a.toml", "id = \n"), "invalid TOML")


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    _assert_invalid(_write(tmp_path, "a.json", [1, 2]), "top level", "list")


@pytest.mark.parametrize("name", ["advisor.txt", "advisor"])
def test_unsupported_extension(tmp_path: Path, ansel_data: dict, name: str) -> None:
    _assert_invalid(_write(tmp_path, name, ansel_data), "unsupported extension")


def test_missing_file(tmp_path: Path) -> None:
    _assert_invalid(tmp_path / "nothing.json", "cannot read")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b'{"id": "\xff"}')
    _assert_invalid(path, "UTF-8")


def test_control_characters_in_the_path_stay_out_of_the_message(tmp_path: Path) -> None:
    path = tmp_path / "bad\nname.txt"
    with pytest.raises(InvalidInput) as info:
        load_advisor_file(path)
    assert "\n" not in info.value.message
