"""Config decoding: defaults, merging, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.config import DEFAULT_AGENTS, default_config, home_dir, load_config, parse_config
from agents.config_template import default_config_text
from agents.errors import ConfigError


def test_defaults_define_the_five_agents() -> None:
    config = default_config()
    assert list(config.agents) == ["lead", "dev", "review", "ops", "scribe"]
    assert config.approval_timeout_s == 600
    assert config.inference.model == ""  # the embedded SmolLM2
    assert "run_shell" in config.agents["dev"].tools
    assert "write_file" not in config.agents["review"].tools
    assert all(a.system_prompt and a.role for a in config.agents.values())


def test_partial_agent_table_keeps_the_other_defaults() -> None:
    config = parse_config("[agents.dev]\npriority = 7\n[agents.ops]\nenabled = false\n")
    assert config.agents["dev"].priority == 7
    assert config.agents["dev"].tools == DEFAULT_AGENTS["dev"].tools
    assert "ops" not in config.enabled_agents()


def test_a_new_agent_needs_its_required_fields() -> None:
    with pytest.raises(ConfigError, match=r"agents.qa: .*role"):
        parse_config('[agents.qa]\nsystem_prompt = "x"\ntools = []\n')
    config = parse_config('[agents.qa]\nrole = "tests"\nsystem_prompt = "x"\ntools = ["read_file"]\n')
    assert config.agents["qa"].priority == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "unknown key colour"),
        ("[inference]\nslotz = 2\n", "unknown key inference.slotz"),
        ("[agents.dev.inference]\ntemprature = 1.0\n", "unknown key agents.dev.inference.temprature"),
        ('approval_timeout_s = "ten"\n', "approval_timeout_s: expected `float`"),
        ('[agents.dev]\ntools = "all"\n', "agents.dev.tools: expected `array`"),
        ("[inference]\nslots = 0\n", "inference.slots: must be >= 1"),
        ("approval_timeout_s = -1\n", "approval_timeout_s: must be a number > 0"),
        ("approval_timeout_s = nan\n", "approval_timeout_s: must be a number > 0"),
        ("[agents.dev.inference]\ntimeout_s = inf\n", "agents.dev.inference.timeout_s: must be a number > 0"),
        ("[agents.dev.inference]\ntemperature = nan\n", "agents.dev.inference.temperature"),
        ("[inference]\nthreads = -2\n", "inference.threads: must be >= 0"),
        ("[inference]\nn_gpu_layers = -5\n", "inference.n_gpu_layers: must be >= -1"),
        ('[agents.Owner]\nrole = "x"\nsystem_prompt = "x"\ntools = []\n', "agents.Owner"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_errors_name_the_key_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "config.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("config.toml: ")
    assert "\n" not in str(err.value)


def test_template_round_trips_to_the_defaults() -> None:
    assert parse_config(default_config_text()) == default_config()


def test_home_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path / "env-home"))
    assert home_dir(None) == tmp_path / "env-home"
    assert home_dir(str(tmp_path / "flag")) == tmp_path / "flag"  # --home wins
    monkeypatch.delenv("AGENTDECK_HOME")
    assert home_dir(None).name == "agentdeck"


def test_load_config_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path) == default_config()
