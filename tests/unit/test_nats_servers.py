"""A NATS cluster given as one setting: comma-separated URLs, split for the client and redacted for logs."""

from __future__ import annotations

from broker.config import Settings
from broker.nats_errors import redact
from squall.cluster import settings_env


def test_a_comma_separated_url_is_a_list_of_servers() -> None:
    settings = Settings(nats_url="nats://a:4222, nats://b:4222,,nats://c:4222 ")
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert Settings(nats_url="nats://a:4222").nats_servers == ["nats://a:4222"]
    assert Settings().nats_servers == []


def test_every_url_of_a_list_loses_its_credentials_in_logs() -> None:
    assert redact("nats://u:p@a:4222,nats://u:p@b:4223") == "nats://a:4222,nats://b:4223"
    assert redact("nats://a:4222") == "nats://a:4222"


def test_a_child_process_gets_the_settings_that_differ_from_the_defaults() -> None:
    env = settings_env(Settings(nats_url="nats://a:1,nats://b:2", replicas=3, broker_ack_wait_s=2.5))
    assert env == {
        "SQUALL_NATS_URL": "nats://a:1,nats://b:2",
        "SQUALL_REPLICAS": "3",
        "SQUALL_BROKER_ACK_WAIT_S": "2.5",
    }
    rebuilt = Settings.from_env(env)
    assert rebuilt.replicas == 3 and rebuilt.broker_ack_wait_s == 2.5
