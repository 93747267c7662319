"""Settings: sources and their priority, validation errors, and secret redaction."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agentdeck.core import settings as settings_module
from agentdeck.core.errors import ConfigError
from agentdeck.core.models import Budget
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.settings import AgentSpec, Settings, find_config, redact, redact_url
from agentdeck.core.spec import SpecLimits


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No AGENTDECK_* variables, no config file found, home under tmp_path."""
    for name in list(os.environ):
        if name.upper().startswith("AGENTDECK_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings_module, "SYSTEM_CONFIG", tmp_path / "etc" / "agentdeck.toml")
    return tmp_path


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -------------------------------------------------------------------------------- defaults


def test_defaults_put_state_under_the_user_data_dir(tmp_path: Path) -> None:
    """With nothing configured, state lives in ~/.local/share/agentdeck."""
    s = Settings.load()
    home = tmp_path / "user" / ".local" / "share" / "agentdeck"
    assert s.home == home
    assert s.bus_url == "memory://"
    assert s.store_url == f"sqlite:///{home}/agentdeck.db"
    assert s.registry_url == f"sqlite:///{home}/registry.db"
    assert s.blob_url == f"file://{home}/blobs"
    assert s.node == socket.gethostname()
    assert s.limits == SpecLimits()
    assert (s.scheduler.poll_interval, s.scheduler.batch_size) == (0.2, 500)
    assert (s.retry, s.agents, s.log_level, s.log_format) == ({}, [], "info", "auto")


def test_xdg_data_home_moves_the_default_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$XDG_DATA_HOME/agentdeck is the home when set."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Settings.load().home == tmp_path / "xdg" / "agentdeck"


def test_agentdeck_home_moves_every_default_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AGENTDECK_HOME wins over XDG and the URL defaults follow it."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path / "state"))
    s = Settings.load()
    assert s.home == tmp_path / "state"
    assert s.store_url == f"sqlite:///{tmp_path}/state/agentdeck.db"


def test_home_expands_the_tilde(tmp_path: Path) -> None:
    """A home written with ~ is expanded."""
    assert Settings.load(home="~/ad").home == tmp_path / "user" / "ad"


# --------------------------------------------------------------------------------- sources


def test_env_beats_toml_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An env var wins over the TOML file, which wins over the default."""
    write_toml(tmp_path / "agentdeck.toml", 'bus_url = "amqp://toml/"\nnode = "from-toml"\n')
    monkeypatch.setenv("AGENTDECK_BUS_URL", "amqp://env/")
    s = Settings.load()
    assert s.bus_url == "amqp://env/"
    assert s.node == "from-toml"
    assert s.log_level == "info"


def test_a_list_of_brokers_in_toml_is_one_bus_url(tmp_path: Path) -> None:
    """bus_url may list a cluster's brokers; the bus reads them comma-joined."""
    write_toml(
        tmp_path / "agentdeck.toml",
        'bus_url = ["amqp://u:p@mq1:5672/", "amqp://u:p@mq2:5672/"]\n',
    )
    assert Settings.load().bus_url == "amqp://u:p@mq1:5672/,amqp://u:p@mq2:5672/"


def test_keyword_overrides_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword arguments (the command line) win over everything."""
    monkeypatch.setenv("AGENTDECK_NODE", "from-env")
    assert Settings.load(node="from-cli").node == "from-cli"


def test_nested_env_var_sets_one_scheduler_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AGENTDECK_SCHEDULER__POLL_INTERVAL sets one field, merged with the TOML table."""
    write_toml(tmp_path / "agentdeck.toml", "[scheduler]\npoll_interval = 1.0\nbatch_size = 50\n")
    monkeypatch.setenv("AGENTDECK_SCHEDULER__POLL_INTERVAL", "0.5")
    s = Settings.load()
    assert (s.scheduler.poll_interval, s.scheduler.batch_size) == (0.5, 50)


def test_explicit_config_path_is_read(tmp_path: Path) -> None:
    """A config_path given is read instead of ./agentdeck.toml."""
    write_toml(tmp_path / "agentdeck.toml", 'node = "local"\n')
    other = write_toml(tmp_path / "conf" / "x.toml", 'node = "explicit"\n')
    assert Settings.load(config_path=other).node == "explicit"


def test_system_config_is_the_last_resort(tmp_path: Path) -> None:
    """/etc/agentdeck/agentdeck.toml is read when there is no local file."""
    write_toml(settings_module.SYSTEM_CONFIG, 'node = "system"\n')
    assert Settings.load().node == "system"
    write_toml(tmp_path / "agentdeck.toml", 'node = "local"\n')
    assert Settings.load().node == "local"


def test_find_config_reports_no_file() -> None:
    """With no file anywhere, no TOML source is used."""
    assert find_config() is None


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    """A config_path that does not exist is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"nope\.toml' does not exist"):
        Settings.load(config_path=tmp_path / "nope.toml")


def test_toml_tables_fill_retry_agents_and_limits(tmp_path: Path) -> None:
    """Retry policies, agents and limits come from TOML tables."""
    write_toml(
        tmp_path / "agentdeck.toml",
        """
[limits]
max_tasks = 50
[retry.http]
max_attempts = 5
retry_on = ["timeout"]
[[agents]]
kind = "http"
concurrency = 8
[[agents]]
kind = "shell"
name = "runner"
capabilities = ["shell", "build.v2"]
""",
    )
    s = Settings.load()
    assert s.limits.max_tasks == 50
    assert s.retry == {"http": RetryPolicy(max_attempts=5, retry_on=("timeout",))}
    assert s.retry_policy("http").max_attempts == 5
    assert s.retry_policy("echo") == RetryPolicy()
    http, shell = s.agents
    assert (http.name, http.capabilities, http.concurrency) == ("http", ("http",), 8)
    assert (shell.name, shell.capabilities) == ("runner", ("shell", "build.v2"))


def test_retry_policy_objects_are_accepted_as_given() -> None:
    """A RetryPolicy passed in code is kept as it is."""
    policy = RetryPolicy(max_attempts=2)
    assert Settings.load(retry={"echo": policy}).retry["echo"] is policy


def test_retry_policy_from_nested_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    """AGENTDECK_RETRY__ECHO__MAX_ATTEMPTS builds a policy for echo from a string."""
    monkeypatch.setenv("AGENTDECK_RETRY__ECHO__MAX_ATTEMPTS", "7")
    assert Settings.load().retry["echo"].max_attempts == 7


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOG_LEVEL=DEBUG is read as debug."""
    monkeypatch.setenv("AGENTDECK_LOG_LEVEL", "DEBUG")
    assert Settings.load().log_level == "debug"


# ------------------------------------------------------------------------------ bad input


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    """A TOML syntax error is a ConfigError with the file path and the position."""
    path = write_toml(tmp_path / "agentdeck.toml", 'bus_url = "unterminated\n')
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert str(info.value).startswith(f"{path}: malformed TOML: ")
    assert "line 1" in str(info.value)


def test_bad_url_names_the_field_and_the_allowed_forms() -> None:
    """A value that is not scheme://... is refused with the forms that field takes."""
    with pytest.raises(ConfigError) as info:
        Settings.load(bus_url="foo")
    assert str(info.value) == (
        "invalid settings (from AGENTDECK_* environment variables): "
        "bus_url: 'foo' is not a URL; expected memory:// or amqp://user:pass@host:5672/vhost"
    )


def test_bad_url_error_does_not_show_its_password() -> None:
    """A malformed URL holding a password is shown with the password masked."""
    with pytest.raises(ConfigError) as info:
        Settings.load(store_url="postgresql:/bob:hunter2@db/x")
    assert "hunter2" not in str(info.value)
    assert "bob:***@db" in str(info.value)


def test_bad_value_in_toml_names_the_field_and_file(tmp_path: Path) -> None:
    """A bad nested value is named by its dotted path, with the file it may come from."""
    path = write_toml(tmp_path / "agentdeck.toml", "[scheduler]\npoll_interval = -1\n")
    with pytest.raises(ConfigError) as info:
        Settings.load()
    message = str(info.value)
    assert str(path) in message
    assert "scheduler.poll_interval: Input should be greater than 0 (got -1)" in message


def test_bad_agent_kind_lists_the_kinds() -> None:
    """An unknown agent kind is refused with the known kinds."""
    with pytest.raises(ConfigError) as info:
        Settings.load(agents=[{"kind": "robot"}])
    assert (
        "agents.0.kind: Input should be 'echo', 'sleep', 'chaos', 'shell', 'http', 'python', "
        "'claude' or 'anthropic' (got 'robot')"
    ) in str(info.value)


def test_bad_agent_capability_and_concurrency() -> None:
    """Agent capabilities follow the capability pattern; concurrency is 1..1000."""
    with pytest.raises(ConfigError) as info:
        Settings.load(agents=[{"kind": "echo", "capabilities": ["Echo"], "concurrency": 0}])
    message = str(info.value)
    assert "capability 'Echo' is not allowed" in message
    assert "agents.0.concurrency: Input should be greater than or equal to 1" in message


def test_bad_retry_policy_names_the_capability() -> None:
    """A bad per-capability retry policy is named by capability and field."""
    with pytest.raises(ConfigError) as info:
        Settings.load(retry={"echo": {"max_attempts": 0}, "Bad Name": {}})
    message = str(info.value)
    assert "retry.echo: max_attempts must be an integer from 1 to 100, got 0" in message
    assert "retry.Bad Name: capability 'Bad Name' is not allowed" in message


def test_unknown_setting_is_refused() -> None:
    """A misspelt setting is named, not silently ignored."""
    with pytest.raises(ConfigError, match="bus_ulr: unknown setting"):
        Settings.load(bus_ulr="memory://")


def test_unparsable_env_list_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An env var for a list that is not JSON is a ConfigError naming the field."""
    monkeypatch.setenv("AGENTDECK_AGENTS", "echo")
    with pytest.raises(ConfigError, match='field "agents"'):
        Settings.load()


def test_heartbeat_must_be_shorter_than_ttls() -> None:
    """A heartbeat slower than the TTLs it refreshes is refused."""
    with pytest.raises(ConfigError, match=r"heartbeat_interval \(10\) must be shorter"):
        Settings.load(scheduler={"heartbeat_interval": 10.0})


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after loading."""
    s = Settings.load()
    with pytest.raises(ValueError):
        s.node = "x"  # type: ignore[misc]


# ------------------------------------------------------------------------------ redaction


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://bob:s3cret@rabbit:5672/vh", "amqp://bob:***@rabbit:5672/vh"),
        ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
        ("amqp://bob:p@ss/w@rabbit/", "amqp://bob:***@rabbit/"),
        ("postgresql://bob@db/x", "postgresql://bob@db/x"),
        ("memory://", "memory://"),
        ("sqlite:////abs/agentdeck.db", "sqlite:////abs/agentdeck.db"),
        (
            "s3://b/p?endpoint_url=http://minio:9000&aws_secret_access_key=k#top",
            "s3://b/p?endpoint_url=http://minio:9000&aws_secret_access_key=***#top",
        ),
        ("s3://b/p?flag&token=abc", "s3://b/p?flag&token=***"),
        ("bob:pw@host", "bob:***@host"),
    ],
)
def test_redact_url_masks_only_the_secret(url: str, shown: str) -> None:
    """Passwords and secret query values become ***; everything else is kept as written."""
    assert redact_url(url) == shown


def test_redact_masks_secret_keys_and_urls_deeply() -> None:
    """redact walks mappings and lists, masking secret-named keys and URL passwords."""
    data = {"api-token": "t", "nested": [{"url": "http://u:p@h/"}], "plain": "a@b", "n": 3}
    assert redact(data) == {
        "api-token": "***",
        "nested": [{"url": "http://u:***@h/"}],
        "plain": "a@b",
        "n": 3,
    }


def test_repr_and_str_never_show_passwords(tmp_path: Path) -> None:
    """repr(settings) and str(settings) mask URL passwords and agent option secrets."""
    write_toml(
        tmp_path / "agentdeck.toml",
        """
bus_url = "amqp://bob:s3cret@rabbit:5672/vh"
[[agents]]
kind = "http"
options = {password = "hunter2"}
""",
    )
    s = Settings.load()
    for text in (repr(s), str(s)):
        assert "s3cret" not in text
        assert "hunter2" not in text
        assert "amqp://bob:***@rabbit:5672/vh" in text
    assert s.bus_url == "amqp://bob:s3cret@rabbit:5672/vh"


def test_redacted_is_json_able_with_every_url_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """redacted() gives plain JSON data with every password masked."""
    monkeypatch.setenv("AGENTDECK_STORE_URL", "postgresql://bob:pw1@db/x")
    monkeypatch.setenv("AGENTDECK_REGISTRY_URL", "redis://:pw2@redis:6379/0")
    monkeypatch.setenv("AGENTDECK_RETRY__ECHO__RETRY_ON", '["lost"]')
    data = Settings.load().redacted()
    assert data["store_url"] == "postgresql://bob:***@db/x"
    assert data["registry_url"] == "redis://:***@redis:6379/0"
    assert data["retry"]["echo"]["retry_on"] == ["lost"]
    assert isinstance(data["home"], str)
    assert "pw1" not in repr(data)
    assert "pw2" not in repr(data)


def test_agent_spec_defaults_follow_kind() -> None:
    """An agent's name and capabilities default to its kind."""
    agent = AgentSpec.model_validate({"kind": "sleep"})
    assert (agent.name, agent.capabilities, agent.concurrency, agent.options) == (
        "sleep",
        ("sleep",),
        4,
        {},
    )


def test_label_budgets_come_from_toml(tmp_path: Path) -> None:
    """``[budgets."name=value"]`` tables give each label its budget, either key optional."""
    path = write_toml(
        tmp_path / "agentdeck.toml",
        '[budgets."team=search"]\nusd = 50.0\ntokens = 10_000_000\n'
        '[budgets."env=prod"]\ntokens = 5\n',
    )
    s = Settings.load(path)
    assert s.budgets == {
        "team=search": Budget(usd=50.0, tokens=10_000_000),
        "env=prod": Budget(tokens=5),
    }
    assert s.redacted()["budgets"]["env=prod"] == {"tokens": 5}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[budgets."team=search"]\nusd = 0\n', "budgets.team=search: .*usd must be a positive"),
        ('[budgets."team=search"]\ntokens = 1.5\n', "tokens must be a positive whole number"),
        ('[budgets."team=search"]\ndollars = 5\n', "unknown key.*dollars; allowed: usd, tokens"),
        ('[budgets."team"]\nusd = 5\n', "budget key 'team' is not a label written name=value"),
    ],
)
def test_a_bad_label_budget_is_one_config_error(tmp_path: Path, toml: str, message: str) -> None:
    """A label budget that is not positive, has a stray key, or a key that is not a label is
    a ConfigError naming it and what is allowed."""
    path = write_toml(tmp_path / "agentdeck.toml", toml)
    with pytest.raises(ConfigError, match=message):
        Settings.load(path)
