"""The Kafka mock's control channel without librdkafka: routing, validation, client parsing.

A fake cluster records calls; the client-server test runs the real HTTP
server on 127.0.0.1 in a thread, so the wire contract is covered too.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from spatialjoin_devstack.kafka_control import (
    ApiKey,
    ErrorCode,
    KafkaControl,
    KafkaControlError,
    ReadyInfo,
    decode_reply,
)
from spatialjoin_devstack.kafka_mock import (
    ControlServer,
    MockError,
    handle_control,
    parse_topic_spec,
    write_ready_file,
)

pytestmark = pytest.mark.unit


class FakeCluster:
    """Records every call; refuses a second topic of the same name and unknown brokers."""

    broker_count = 3

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.topics: set[str] = set()

    @property
    def bootstraps(self) -> str:
        return "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"

    def create_topic(
        self, name: str, partitions: int, replication_factor: int | None = None
    ) -> None:
        if name in self.topics:
            raise MockError("create", ErrorCode.TOPIC_ALREADY_EXISTS, "TOPIC_ALREADY_EXISTS")
        self.topics.add(name)
        self.calls.append(("create_topic", name, partitions, replication_factor))

    def _broker(self, action: str, broker_id: int, *rest: int) -> None:
        if broker_id > self.broker_count:
            raise MockError(action, ErrorCode.BROKER_NOT_AVAILABLE, "BROKER_NOT_AVAILABLE")
        self.calls.append((action, broker_id, *rest))

    def broker_down(self, broker_id: int) -> None:
        self._broker("broker_down", broker_id)

    def broker_up(self, broker_id: int) -> None:
        self._broker("broker_up", broker_id)

    def set_rtt(self, broker_id: int, ms: int) -> None:
        self._broker("set_rtt", broker_id, ms)

    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None:
        self.calls.append(("push_request_errors", api_key, list(errors)))

    def clear_request_errors(self, api_key: int) -> None:
        self.calls.append(("clear_request_errors", api_key))


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "call"),
    [
        ("POST", "/topics", {"name": "t", "partitions": 12}, 201, ("create_topic", "t", 12, None)),
        (
            "POST",
            "/topics",
            {"name": "t", "partitions": 2, "replication_factor": 1},
            201,
            ("create_topic", "t", 2, 1),
        ),
        ("POST", "/brokers/2/down", {}, 200, ("broker_down", 2)),
        ("POST", "/brokers/1/up", {}, 200, ("broker_up", 1)),
        ("POST", "/brokers/-1/rtt", {"ms": 250}, 200, ("set_rtt", -1, 250)),
        (
            "POST",
            "/errors",
            {"api_key": 3, "errors": [5, -195]},
            200,
            ("push_request_errors", 3, [5, -195]),
        ),
        ("DELETE", "/errors/3", {}, 200, ("clear_request_errors", 3)),
    ],
)
def test_routes_reach_the_cluster(
    method: str, path: str, body: dict[str, Any], status: int, call: tuple[Any, ...]
) -> None:
    cluster = FakeCluster()
    got_status, _reply = handle_control(cluster, method, path, body)
    assert (got_status, cluster.calls) == (status, [call])


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/topics", {"name": "t"}, 400),
        ("POST", "/topics", {"name": "", "partitions": 3}, 400),
        ("POST", "/topics", {"name": "t", "partitions": True}, 400),
        ("POST", "/brokers/1/rtt", {"ms": "5"}, 400),
        ("POST", "/errors", {"api_key": 3, "errors": 5}, 400),
        ("POST", "/errors", {"api_key": 3, "errors": [5, "x"]}, 400),
        ("GET", "/topics", {}, 404),
        ("POST", "/brokers/1/reboot", {}, 404),
        ("POST", "/brokers/9/down", {}, 404),
    ],
)
def test_bad_requests_are_refused_without_calls(
    method: str, path: str, body: dict[str, Any], status: int
) -> None:
    cluster = FakeCluster()
    got_status, reply = handle_control(cluster, method, path, body)
    assert got_status == status
    assert "error" in reply
    assert cluster.calls == []


def test_duplicate_topic_is_a_conflict_with_the_kafka_code() -> None:
    cluster = FakeCluster()
    handle_control(cluster, "POST", "/topics", {"name": "t", "partitions": 1})
    status, reply = handle_control(cluster, "POST", "/topics", {"name": "t", "partitions": 1})
    assert (status, reply["code"]) == (HTTPStatus.CONFLICT, ErrorCode.TOPIC_ALREADY_EXISTS)


@pytest.mark.parametrize(("spec", "parsed"), [("tasks:12", ("tasks", 12)), ("a:b:3", ("a:b", 3))])
def test_topic_spec_parses(spec: str, parsed: tuple[str, int]) -> None:
    assert parse_topic_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["tasks", "tasks:", ":3", "tasks:0", "tasks:-1", "tasks:x"])
def test_topic_spec_rejects(spec: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_topic_spec(spec)


def test_ready_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ready.json"
    assert ReadyInfo.read(path) is None
    write_ready_file(path, {"bootstrap": "127.0.0.1:9", "control": "http://127.0.0.1:8"})
    assert ReadyInfo.read(path) == ReadyInfo("127.0.0.1:9", "http://127.0.0.1:8")
    assert [p.name for p in path.parent.iterdir()] == ["ready.json"]  # no temp file left


@pytest.mark.parametrize(
    "text",
    ["[]", "{}", '{"bootstrap": "x"}', '{"bootstrap": "x", "control": "ftp://y"}', "{"],
)
def test_ready_info_rejects_incomplete_files(text: str) -> None:
    with pytest.raises(ValueError):
        ReadyInfo.from_json(text)


def test_decode_reply_tolerates_empty_and_non_json() -> None:
    assert decode_reply(b"") == {}
    assert decode_reply(b"[1]") == {}
    assert decode_reply(b"oops") == {"error": "oops"}


@pytest.fixture
def served() -> Iterator[tuple[KafkaControl, FakeCluster]]:
    """The real control server around a fake cluster, on a free 127.0.0.1 port."""
    cluster = FakeCluster()
    server = ControlServer(0, cluster)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield KafkaControl(server.url, timeout=5), cluster
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_client_and_server_agree(served: tuple[KafkaControl, FakeCluster]) -> None:
    control, cluster = served
    control.create_topic("t", 4)
    control.create_topic("t", 4, exist_ok=True)
    control.broker_down(1)
    control.broker_up(1)
    control.set_rtt(2, 100)
    control.push_request_errors(ApiKey.METADATA, [ErrorCode.LEADER_NOT_AVAILABLE])
    control.clear_request_errors(ApiKey.METADATA)
    assert control.health()["brokers"] == 3
    assert cluster.calls == [
        ("create_topic", "t", 4, None),
        ("broker_down", 1),
        ("broker_up", 1),
        ("set_rtt", 2, 100),
        ("push_request_errors", 3, [5]),
        ("clear_request_errors", 3),
    ]


def test_client_raises_with_status_and_code(served: tuple[KafkaControl, FakeCluster]) -> None:
    control, _cluster = served
    control.create_topic("t", 1)
    with pytest.raises(KafkaControlError) as conflict:
        control.create_topic("t", 1)
    assert (conflict.value.status, conflict.value.code) == (409, 36)
    with pytest.raises(KafkaControlError) as missing:
        control.broker_up(7)
    assert missing.value.status == 404
