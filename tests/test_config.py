"""Config decoding: defaults, merging, and errors that name the key path."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from pathlib import Path

import msgspec
import msgspec.inspect as mi
import pytest
from helpers import agentdeck_cmd, subprocess_env
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.config import (
    DEFAULT_AGENTS,
    MAX_N_CTX,
    MAX_SLOTS,
    MAX_THREADS,
    Config,
    default_config,
    default_config_text,
    home_dir,
    load_config,
    parse_config,
)
from agents.config.defaults import read_default_crew
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
        ("[inference]\nslots = 0\n", "inference.slots must be 1..256, got 0"),
        ("approval_timeout_s = -1\n", "approval_timeout_s must be a finite number > 0"),
        ("approval_timeout_s = nan\n", "approval_timeout_s must be a finite number > 0"),
        ("[agents.dev.inference]\ntimeout_s = inf\n", "agents.dev.inference.timeout_s must be a finite number >= 0"),
        ("[agents.dev.inference]\ntemperature = nan\n", "agents.dev.inference.temperature"),
        ("[inference]\nthreads = -2\n", "inference.threads must be 0.."),
        ("[inference]\nn_gpu_layers = -5\n", "inference.n_gpu_layers must be -1..1024"),
        ('[agents.Owner]\nrole = "x"\nsystem_prompt = "x"\ntools = []\n', "agents.Owner"),
        ('[agents.qa]\nrole = "x"\ntools = []\n', "agents.qa: missing required key system_prompt"),
        ('[[rules]]\nagent = "*"\ntool = "read_file"\npattern = "*"\ndecision = "maybe"\n',
         'rules[0].decision: expected one of "allow", "ask", "deny", got \'maybe\''),
        ("[agents.dev]\nmax_steps = true\n", "agents.dev.max_steps: expected `int`, got `bool`"),
        ("[agents.dev]\nmax_steps = 2.0\n", "agents.dev.max_steps: expected `int`, got `float`"),
        ("ui = 3\n", "ui: expected `object`, got `int`"),
        ('[[schedules]]\nagent = "ops"\nname = "x"\nevery_s = 0.5\n',
         "schedules[0].every_s must be a finite number >= 1 and <= 3.16224e+07, got 0.5"),
        ('[[schedules]]\nagent = "ops"\nname = "x"\ncron = "every day"\n', "schedules[0].cron: not a cron"),
        ('[agents.dev]\ntools = ["read_file", "fly"]\n', "agents.dev.tools: unknown tool 'fly'"),
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


# --- the default crew is product content: agents/config/default_crew.toml ---


def test_the_default_crew_is_the_five_agents_of_the_design() -> None:
    """DESIGN.md, "The five default agents": these names, in this order, each with a role,
    a prompt that ends with the shared rules, and tools that exist (parse_config checks)."""
    crew = read_default_crew()
    assert list(crew.agents) == ["lead", "dev", "review", "ops", "scribe"]
    for name, agent in crew.agents.items():
        assert agent.role and agent.system_prompt.startswith(f"You are {name}. ")
        assert agent.system_prompt.endswith(" " + crew.shared_prompt)
    assert [(s.agent, s.every_s) for s in crew.schedules] == [("ops", 300.0)]
    assert {r.decision for r in crew.rules if r.pattern == "sudo"} == {"deny"}
    assert parse_config("").agents == crew.agents  # the defaults pass every check a file does


def test_the_default_crew_file_is_read_strictly() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `colour`"):
        read_default_crew('shared_prompt = ""\nrules = []\nschedules = []\ncolour = 1\n[agents]\n')


# --- the schema is the one source of every range ---


def _numbers(kind: mi.Type, path: str, seen: set[type]) -> list[tuple[str, mi.Type]]:
    """Every int and float reachable from `kind`, with its key path."""
    if isinstance(kind, mi.Metadata):
        return _numbers(kind.type, path, seen)
    if isinstance(kind, mi.UnionType):
        return [n for t in kind.types for n in _numbers(t, path, seen)]
    if isinstance(kind, mi.StructType) and kind.cls not in seen:
        seen.add(kind.cls)
        return [n for f in kind.fields for n in _numbers(f.type, f"{path}.{f.name}", seen)]
    if isinstance(kind, mi.DictType | mi.ListType):
        return _numbers(kind.value_type if isinstance(kind, mi.DictType) else kind.item_type, path + "[]", seen)
    return [(path, kind)] if isinstance(kind, mi.IntType | mi.FloatType) else []


def test_every_number_in_the_schema_has_a_range() -> None:
    """A number added without `Meta(ge=.., le=..)` (or gt=) fails here: an unbounded value
    that validates is how n_ctx = 1e20 once hung at 19 GB."""
    numbers = _numbers(mi.type_info(Config), "", set())
    assert len(numbers) >= 20  # it found them: the walk reaches agents and schedules
    unbounded = [path for path, kind in numbers
                 if kind.le is None or (kind.ge is None and kind.gt is None)]  # type: ignore[union-attr]
    assert unbounded == []


@pytest.mark.parametrize("key", ["approval_timeout_s", "defer_s", "memory_half_life_days"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^config.toml: {key} must be a finite number"):
        parse_config(f"{key} = {value}\n", "config.toml")


def test_msgspec_enforces_the_same_ranges_on_its_own() -> None:
    """The Meta ranges are real constraints, not only the checker's wording: a Config
    decoded without parse_config is refused too."""
    with pytest.raises(msgspec.ValidationError, match="<= 1048576"):
        msgspec.convert({"inference": {"n_ctx": 10**20}}, Config)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"approval_timeout_s": float("nan")}, Config)


def test_home_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path / "env-home"))
    assert home_dir(None) == tmp_path / "env-home"
    assert home_dir(str(tmp_path / "flag")) == tmp_path / "flag"  # --home wins
    monkeypatch.delenv("AGENTDECK_HOME")
    assert home_dir(None).name == "agentdeck"


def test_load_config_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path) == default_config()


# --- every number has a range, checked before anything is allocated ---

# (config text, the one line's key and range). The first four are the audit's: a hang at
# 19 GB, a segfault, a silent wrap to 1024, and "lower n_ctx" for too many slots.
OUT_OF_RANGE = [
    ("[inference]\nn_ctx = 100000000000000000000\n",
     "inference.n_ctx must be 256..1048576, got 100000000000000000000"),
    ("[inference]\nthreads = 100000\n", f"inference.threads must be 0..{min(4 * (os.cpu_count() or 1), 1024)}, got 100000"),
    ("[inference]\nn_ctx = 4294968320\n", "inference.n_ctx must be 256..1048576, got 4294968320"),
    ("[inference]\nslots = 1000000\n", "inference.slots must be 1..256, got 1000000"),
    ("[inference]\nn_batch = 4294967312\n", "inference.n_batch must be 16..8192"),
    ("[inference]\nn_gpu_layers = 4294967296\n", "inference.n_gpu_layers must be -1..1024"),
    ("[inference]\nseed = -1\n", "inference.seed must be 0..4294967295"),
    ("[inference]\nidle_cache_tokens = 9000\n", "inference.idle_cache_tokens must be 0..8192"),
    ("[inference]\nprefill_budget = 100000\n", "inference.prefill_budget must be 0..512"),
    ("[ui]\nrefresh_hz = 1e308\n", "ui.refresh_hz must be a finite number > 0 and <= 60"),
    ("[agents.dev]\nmax_steps = 1000000000\n", "agents.dev.max_steps must be 1..1000"),
    ("[agents.dev]\npriority = 10\n", "agents.dev.priority must be 0..9"),
    ("[agents.dev]\nmax_concurrent = 0\n", "agents.dev.max_concurrent must be 1..16"),
    ("[agents.dev.inference]\nmax_tokens = 0\n", "agents.dev.inference.max_tokens must be 1..1048576"),
    ("[agents.dev.inference]\ntop_k = 4294967296\n", "agents.dev.inference.top_k must be 0..1048576"),
    ("[agents.dev.inference]\ntimeout_s = 1e12\n", "agents.dev.inference.timeout_s must be a finite number >= 0 and <= 86400"),
    ("[agents.dev.inference]\ntimeout_s = -1\n", "agents.dev.inference.timeout_s must be a finite number >= 0 and <= 86400"),
    ("[inference]\nmax_call_s = 5\n", "inference.max_call_s must be a finite number >= 10 and <= 86400"),
    ("[agents.dev.inference]\ntop_p = 1.5\n", "agents.dev.inference.top_p must be a finite number >= 0 and <= 1"),
    ("defer_s = 1e300\n", "defer_s must be a finite number > 0 and <= 604800"),
    ("memory_half_life_days = 0\n", "memory_half_life_days must be a finite number > 0 and <= 36500"),
    ("memory_compact_at = 3\n", "memory_compact_at must be 4..100000"),
    ("approval_timeout_s = 1e9\n", "approval_timeout_s must be a finite number > 0 and <= 86400"),
]


@pytest.mark.parametrize(("text", "message"), OUT_OF_RANGE)
def test_every_number_out_of_range_names_its_key_and_range(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "config.toml")
    assert str(err.value).startswith(f"config.toml: {message}")  # then a note, if any
    assert "\n" not in str(err.value) and "lower" not in str(err.value)


def _cli(home: Path, *args: str) -> tuple[int, str, int]:
    """Run the real CLI: (exit code, stderr, the child's peak RSS in bytes). Killed after
    20 s, so a hang fails the test instead of eating it."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(agentdeck_cmd("--home", str(home), *args), env=subprocess_env(home),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        timer = threading.Timer(20, proc.kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, err.read().decode(), usage.ru_maxrss * 1024


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("text", "message"), OUT_OF_RANGE[:4])
@pytest.mark.parametrize("command", [("status",), ("run", "--headless", "--until-idle")])
def test_the_cli_refuses_them_in_one_line_without_allocating(
    tmp_path: Path, text: str, message: str, command: tuple[str, ...],
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    config = home / "config.toml"
    config.write_text(text)
    config.chmod(0o600)
    code, stderr, peak_rss = _cli(home, *command)
    assert code == 2, stderr  # killed (a hang) would be -9; a segfault -11
    [line] = stderr.splitlines()
    assert line.startswith(f"agentdeck: {config}: {message}")
    assert peak_rss < 1 << 30  # the n_ctx of 1e20 once took 19 GB


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(["n_ctx", "threads", "slots"]),
       value=st.integers() | st.integers(min_value=-(2**80), max_value=2**80))
def test_inference_numbers_are_in_range_or_a_one_line_config_error(key: str, value: int) -> None:
    """Property: whatever validates is within the range llama.cpp can take; anything else
    is the one-line ConfigError naming the key, never another exception."""
    low, high = {"n_ctx": (256, MAX_N_CTX), "slots": (1, MAX_SLOTS),
                 "threads": (0, min(4 * (os.cpu_count() or 1), MAX_THREADS))}[key]
    try:
        config = parse_config(f"[inference]\n{key} = {value}\n", "config.toml")
    except ConfigError as err:
        line = f"config.toml: inference.{key} must be {low}..{high}, got {value}"
        assert str(err) == line or str(err).startswith(line + " (")  # then a note, if any
        assert not low <= value <= high
        return
    assert low <= getattr(config.inference, key) == value <= high


def test_a_model_calls_time_is_derived_unless_set() -> None:
    """timeout_s 0 (the default): the runner derives each call's deadline from the model's
    measured speed, within inference.max_call_s; a positive value is a fixed override."""
    defaults = default_config()
    assert defaults.inference.max_call_s == 600.0
    assert {a.inference.timeout_s for a in defaults.agents.values()} == {0.0}
    text = default_config_text()
    assert "max_call_s = 600.0" in text and "0: derived from the model's measured speed" in text
    fixed = parse_config("[inference]\nmax_call_s = 900\n[agents.dev.inference]\ntimeout_s = 30\n")
    assert (fixed.inference.max_call_s, fixed.agents["dev"].inference.timeout_s) == (900.0, 30.0)
    assert fixed.agents["ops"].inference.timeout_s == 0.0
