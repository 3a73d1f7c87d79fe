"""The config file: flags > environment > file > defaults, mistakes named with the file and
key, `mondrian config show` and `config init`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mondrian.cli.main import main
from mondrian.config import Settings, config_template, default_of, load_settings
from mondrian.errors import InvalidInput


def _write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_file_under_home_is_read(mondrian_home):
    _write_config(mondrian_home, 'model = "from/file"\nmax_pixels = 4096\nfast = true\n')
    settings = load_settings()
    assert settings.model == "from/file" and settings.max_pixels == 4096 and settings.fast == "on"


def test_flags_win_over_environment_over_file_over_defaults(mondrian_home, monkeypatch):
    _write_config(mondrian_home, 'model = "file/m"\nbackend = "mlx"\ndevice = "cpu"\n')
    monkeypatch.setenv("MONDRIAN_BACKEND", "transformers")
    monkeypatch.setenv("MONDRIAN_DEVICE", "mps")
    settings = load_settings(device="cuda", model=None)
    assert settings.device == "cuda"  # flag over environment (and file)
    assert settings.backend == "transformers"  # environment over file
    assert settings.model == "file/m"  # file over default; a None flag is no flag
    assert settings.dtype == "auto"  # default


def test_mondrian_config_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.toml"
    path.write_text('analysis_mode = "rag"\nallowed_hosts = ["critic.lan"]\n')
    monkeypatch.setenv("MONDRIAN_CONFIG", str(path))
    settings = load_settings()
    assert settings.analysis_mode == "rag" and settings.allowed_hosts == ["critic.lan"]


def test_a_named_file_that_is_missing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MONDRIAN_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(InvalidInput, match=r"missing\.toml: cannot read"):
        load_settings()


def test_the_file_follows_a_home_given_at_init(tmp_path):
    home = tmp_path / "other-home"
    _write_config(home, "reviews_per_hour = 7\n")
    assert Settings(home=home).reviews_per_hour == 7


def test_every_bad_key_and_value_is_named_with_the_file(mondrian_home):
    path = _write_config(mondrian_home, 'max_pixels = -1\ncolour = "red"\nfast = "maybe"\n')
    with pytest.raises(InvalidInput) as info:
        load_settings()
    message = info.value.message
    assert message.startswith(f"config file {path}: ")
    for fragment in ("key 'max_pixels'", "key 'colour': unknown setting", "key 'fast'"):
        assert fragment in message, message


def test_invalid_toml_is_named(mondrian_home):
    _write_config(mondrian_home, "model = \n")
    with pytest.raises(InvalidInput, match=r"config\.toml: invalid TOML"):
        load_settings()


def test_a_bad_file_is_a_one_line_cli_error_with_status_2(mondrian_home, capsys):
    _write_config(mondrian_home, "colour = 1\n")
    assert main(["advisors", "list"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"mondrian: error: config file {mondrian_home / 'config.toml'}: "
        "key 'colour': unknown setting"
    )


def test_config_show_says_where_each_value_came_from(mondrian_home, monkeypatch, capsys):
    path = _write_config(
        mondrian_home,
        'model = "file/m"\nadmin_token = "s3cret"\n\n[review_tokens]\nalice = "t0ken"\n',
    )
    monkeypatch.setenv("MONDRIAN_MAX_PIXELS", "2048")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "t0ken" not in out
    assert main(["config", "show", "--json"]) == 0
    import json

    shown = json.loads(capsys.readouterr().out)
    assert shown["config_file"] == str(path)
    rows = shown["settings"]
    assert set(rows) == set(Settings.model_fields)
    assert rows["model"] == {"value": "file/m", "source": f"file {path}"}
    assert rows["max_pixels"] == {"value": 2048, "source": "env MONDRIAN_MAX_PIXELS"}
    assert rows["home"]["source"] == "env MONDRIAN_HOME"
    assert rows["dtype"] == {"value": "auto", "source": "default"}
    assert rows["admin_token"]["value"] == "**********"
    assert rows["review_tokens"] == {"value": {"alice": "**********"}, "source": f"file {path}"}


def test_the_template_lists_every_setting_at_its_default():
    text = config_template()
    for name, info in Settings.model_fields.items():
        assert re.search(rf"^# {name} =", text, re.M), name
        assert f"# {info.description}" in text, name
    # Every line with a value, uncommented, is valid TOML that gives the defaults back.
    lines = [line[2:] for line in text.splitlines() if re.match(r"# \w+ = \S", line)]
    values = tomllib.loads("\n".join(line for line in lines if "(unset" not in line))
    assert len(values) == sum(default_of(i) is not None for i in Settings.model_fields.values())
    # home is not passed: a home given at init is where the config file is looked for.
    assert values.pop("home") == str(Settings.model_fields["home"].default)
    settings = Settings(**values)
    for name in values:
        assert getattr(settings, name) == default_of(Settings.model_fields[name]), name


def test_config_init_writes_the_template_and_keeps_an_existing_file(mondrian_home, capsys):
    assert main(["config", "init"]) == 0
    path = mondrian_home / "config.toml"
    assert path.read_text() == config_template()
    assert load_settings().model == Settings.model_fields["model"].default  # all commented
    path.write_text('model = "mine"\n')
    assert main(["config", "init"]) == 2
    assert "--force" in capsys.readouterr().err and path.read_text() == 'model = "mine"\n'
    assert main(["config", "init", "--force"]) == 0
    assert path.read_text() == config_template()


def test_config_init_out_dash_prints_it(capsys):
    assert main(["config", "init", "--out", "-"]) == 0
    assert capsys.readouterr().out == config_template()


def test_config_show_imports_no_model_stack():
    code = "import sys; from mondrian.cli.main import main; main(['config', 'show'])"
    check = code + "; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, timeout=60)
