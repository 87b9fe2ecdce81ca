"""The dead-letter step: a task that cannot be done is published with its error, never dropped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import Producer

from spatialjoin_contracts.task_message import dead_letter_headers


class DeadLetterPublishError(RuntimeError):
    """The dead-letter topic did not acknowledge: the task must not be committed."""


class DeadLetters:
    """A small idempotent producer to the dead-letter topic, flushed per record."""

    def __init__(self, producer_config: dict[str, Any], topic: str) -> None:
        self._producer = Producer({**producer_config, "acks": "all",
                                   "enable.idempotence": True})
        self._topic = topic

    def publish(self, *, key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes | str | None]] | None, reason: str,
                error: str, stage: str, source: str, timeout_s: float = 30.0) -> None:
        """Publish and wait for the broker's acknowledgement (raise if it does not come)."""
        failures: list[str] = []

        def delivered(err: object, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        out_headers: list[tuple[str, str | bytes | None]] = list(dead_letter_headers(
            headers, reason=reason, error=error, stage=stage, source=source))
        self._producer.produce(self._topic, key=key, value=value, on_delivery=delivered,
                               headers=out_headers)
        remaining = self._producer.flush(timeout_s)
        if remaining or failures:
            raise DeadLetterPublishError(
                f"dead-letter publish to {self._topic} failed: "
                f"{failures or [f'{remaining} record(s) not acknowledged in {timeout_s}s']}")

    def close(self) -> None:
        self._producer.flush(10)
