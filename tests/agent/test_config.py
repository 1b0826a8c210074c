"""Config: arguments > environment > file > defaults; secrets never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import Client, Config, ConfigError

pytestmark = pytest.mark.usefixtures("agent_env")


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_defaults(tmp_path: Path) -> None:
    config = Config.load(environ={})
    assert config.url is None and config.token is None
    assert config.number_on == "paid"
    assert config.timeout == 10.0
    assert config.journal.name == "agent-journal.sqlite3"
    assert config.journal.parent.parent == Path(os.environ["XDG_STATE_HOME"])


def test_precedence_arguments_over_environment_over_file(tmp_path: Path) -> None:
    file = write(
        tmp_path / "agent.toml",
        'url = "https://file.example"\ntoken = "file-token"\nnumber_on = "created"\n'
        'timeout = 3\nwhmcs_identifier = "file-id"\n',
    )
    env = {
        "INVOICE_SYNC_AGENT_URL": "https://env.example",
        "INVOICE_SYNC_AGENT_TOKEN": "env-token",
    }
    config = Config.load(file, environ=env, token="arg-token")
    assert config.url == "https://env.example"  # env beats file
    assert config.token == "arg-token"  # argument beats env
    assert config.number_on == "created"  # file beats default
    assert config.timeout == 3.0
    assert config.whmcs_identifier == "file-id"


def test_config_file_from_environment(tmp_path: Path) -> None:
    file = write(tmp_path / "a.toml", 'url = "https://file.example/"\n')
    config = Config.load(environ={"INVOICE_SYNC_AGENT_CONFIG": str(file)})
    assert config.url == "https://file.example"  # trailing slash dropped


def test_empty_environment_value_does_not_override_file(tmp_path: Path) -> None:
    file = write(tmp_path / "a.toml", 'number_on = "created"\n')
    config = Config.load(file, environ={"INVOICE_SYNC_AGENT_NUMBER_ON": ""})
    assert config.number_on == "created"


def test_secrets_never_in_repr() -> None:
    config = Config(
        url="https://n.example",
        token="s3cret-token",
        whmcs_secret="s3cret-w",
        whmcs_access_key="s3cret-k",
    )
    client = Client(config)
    for text in (repr(config), str(config), repr(client)):
        assert "s3cret" not in text


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"number_on": "sometimes"}, "number_on"),
        ({"timeout": "-1"}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"url": "ftp://x.example"}, "url"),
        ({"url": "http://numbers.example"}, "plain http"),
        ({"token": "abc\n"}, "line break"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle"),
        ({"colour": "blue"}, "unknown"),
    ],
)
def test_invalid_values_are_config_errors(kwargs: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Config.load(environ={}, **kwargs)


def test_plain_http_is_fine_on_loopback() -> None:
    assert Config(url="http://127.0.0.1:8000").url == "http://127.0.0.1:8000"
    assert Config(url="http://localhost:8000").url == "http://localhost:8000"


def test_unknown_file_key_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        Config.load(write(tmp_path / "a.toml", 'INVOICE_SYNC_AGENT_URL = "x"\n'), environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(write(tmp_path / "b.toml", "url = \n"), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(tmp_path / "missing.toml", environ={})


def test_world_readable_file_with_token_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = write(tmp_path / "a.toml", 'token = "s3cret"\n', mode=0o644)
    Config.load(file, environ={})
    assert "readable by others" in caplog.text
    assert "s3cret" not in caplog.text


def test_client_requires_url_and_token_and_names_the_variables() -> None:
    with pytest.raises(ConfigError) as info:
        Client(Config())
    assert "INVOICE_SYNC_AGENT_URL" in str(info.value)
    assert "INVOICE_SYNC_AGENT_TOKEN" in str(info.value)
