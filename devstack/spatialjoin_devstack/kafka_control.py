"""Typed client for the Kafka mock host's control channel (JSON over HTTP on 127.0.0.1).

The librdkafka mock cluster lives inside the host process started by
``python -m spatialjoin_devstack.kafka_mock``; tests and the stack CLI reach
it only through this channel, to create topics (the mock has no CreateTopics
admin API) and to inject faults (broker down, latency, request errors).
Standard library only, so it is importable anywhere without extra packages.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any


class ApiKey(IntEnum):
    """Kafka protocol request types (the ``ApiKey`` of a request header)."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    SYNC_GROUP = 14
    INIT_PRODUCER_ID = 22


class ErrorCode(IntEnum):
    """Error codes to inject or expect.

    Positive values are Kafka protocol errors; negative ones are librdkafka's
    local errors (``RD_KAFKA_RESP_ERR__*``). Pushing ``TRANSPORT`` makes the
    mock broker drop the client's connection instead of answering.
    """

    NO_ERROR = 0
    UNKNOWN_TOPIC_OR_PART = 3
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    BROKER_NOT_AVAILABLE = 8
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    TOPIC_ALREADY_EXISTS = 36
    TRANSPORT = -195
    INVALID_ARG = -186
    MSG_TIMED_OUT = -192
    UNKNOWN_BROKER = -146


class KafkaControlError(RuntimeError):
    """The control channel refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(f"kafka control: HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ReadyInfo:
    """What the host writes to its ready file once brokers and control channel are up."""

    bootstrap: str
    control: str

    @classmethod
    def from_json(cls, text: str) -> ReadyInfo:
        """Parse the ready file's JSON; raise ValueError when a field is missing or wrong."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("ready file is not a JSON object")
        bootstrap, control = data.get("bootstrap"), data.get("control")
        if not isinstance(bootstrap, str) or not bootstrap:
            raise ValueError("ready file lacks 'bootstrap'")
        if not isinstance(control, str) or not control.startswith("http://"):
            raise ValueError("ready file lacks an http 'control' url")
        return cls(bootstrap=bootstrap, control=control)

    @classmethod
    def read(cls, path: Path) -> ReadyInfo | None:
        """The ready file's content, or None while it does not exist yet."""
        try:
            return cls.from_json(path.read_text())
        except FileNotFoundError:
            return None


class KafkaControl:
    """One method per control endpoint; raises KafkaControlError on refusal."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def health(self) -> dict[str, Any]:
        """The host's status: bootstrap servers and broker count."""
        return self._call("GET", "/health")

    def create_topic(
        self,
        name: str,
        partitions: int,
        *,
        replication_factor: int | None = None,
        exist_ok: bool = False,
    ) -> None:
        """Create a topic (the mock has no CreateTopics admin API, so tests come here)."""
        body: dict[str, Any] = {"name": name, "partitions": partitions}
        if replication_factor is not None:
            body["replication_factor"] = replication_factor
        try:
            self._call("POST", "/topics", body)
        except KafkaControlError as exc:
            if not (exist_ok and exc.code == ErrorCode.TOPIC_ALREADY_EXISTS):
                raise

    def broker_down(self, broker_id: int) -> None:
        """Drop the broker's connections and refuse new ones; leadership does not move."""
        self._call("POST", f"/brokers/{broker_id}/down")

    def broker_up(self, broker_id: int) -> None:
        """Let the broker accept connections again."""
        self._call("POST", f"/brokers/{broker_id}/up")

    def set_rtt(self, broker_id: int, ms: int) -> None:
        """Delay every response of the broker by ``ms`` milliseconds (0 to clear)."""
        self._call("POST", f"/brokers/{broker_id}/rtt", {"ms": ms})

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        """Fail the next ``len(errors)`` requests of ``api_key``, cluster-wide, in order."""
        self._call("POST", "/errors", {"api_key": int(api_key), "errors": [int(e) for e in errors]})

    def clear_request_errors(self, api_key: int) -> None:
        """Drop the errors still queued for ``api_key``."""
        self._call("DELETE", f"/errors/{int(api_key)}")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return decode_reply(response.read())
        except urllib.error.HTTPError as exc:
            reply = decode_reply(exc.read())
            code = reply.get("code")
            raise KafkaControlError(
                exc.code,
                str(reply.get("error", exc.reason)),
                code if isinstance(code, int) else None,
            ) from None


def decode_reply(raw: bytes) -> dict[str, Any]:
    """The JSON object of a reply; an empty or non-object body reads as ``{}``."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {"error": raw.decode(errors="replace")}
    return data if isinstance(data, dict) else {}
