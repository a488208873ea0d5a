"""serve.config: the service's JSON configuration, checked before anything starts."""

import json

import pytest

from runtime.errors import InputError
from serve.config import ServiceConfig


def test_defaults_bind_loopback_and_fit_one_call():
    config = ServiceConfig.load()
    assert config.host == "127.0.0.1" and config.max_count <= config.max_batch
    assert ServiceConfig(**config.to_dict()) == config


def test_file_and_overrides(tmp_path):
    path = tmp_path / "service.json"
    path.write_text(json.dumps({"max_batch": 4, "max_count": 2, "timeout_s": 30}))
    config = ServiceConfig.load(path, port=9000, engine=None)  # None: not overridden
    assert (config.max_batch, config.max_count, config.timeout_s, config.port) == (4, 2, 30, 9000)
    assert config.engine == ServiceConfig.engine


@pytest.mark.parametrize("text, message", [
    ('{"max_batch": 0}', "max_batch must be at least 1"),
    ('{"max_count": 9}', "exceeds max_batch"),
    ('{"timeout_s": 0}', "timeout_s > 0"),
    ('{"max_queue": -1}', "max_queue must be >= 0"),
    ('{"port": "80"}', "wrong type"),
    ('{"replicas": 2}', "unknown field(s) replicas"),
    ("not json", "not valid JSON"),
])
def test_bad_configs_are_one_line(tmp_path, text, message):
    path = tmp_path / "service.json"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        ServiceConfig.load(path)
    assert message in str(info.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="cannot read the service config"):
        ServiceConfig.load(tmp_path / "missing.json")


def test_a_network_host_is_refused_where_ray_cannot_be_fenced_in(monkeypatch, demo_engine):
    """Without network namespaces, --host 0.0.0.0 would put every Ray port on the network: refused unless
    --expose-ray (nothing starts: the check comes first)."""
    from serve import __main__ as cli
    from serve import netns

    monkeypatch.setattr(netns, "available", lambda: "unshare is not permitted here")
    with pytest.raises(InputError, match="--expose-ray to serve anyway.*or --host 127.0.0.1"):
        cli.main(["--engine", str(demo_engine), "--host", "0.0.0.0"])
