"""librdkafka's mock Kafka cluster, driven through ctypes, and a host process around it.

No Apache Kafka is installable here, but the librdkafka bundled in the
confluent-kafka wheel contains a mock cluster that speaks the real protocol
on TCP (exact offsets and watermarks, idempotent produce, consumer groups
with offset commits, several brokers, fault injection). Its API is C only
(``rdkafka_mock.h``, declared experimental, outside librdkafka's ABI
guarantees), so this module binds the few functions it needs with precise
prototypes and checks them at load time.

The mock cannot create topics over the admin API, so the host pre-creates
them and offers a small JSON-over-HTTP control channel (127.0.0.1 only) for
more topics and for faults; see :mod:`spatialjoin_devstack.kafka_control`.

Run: ``python -m spatialjoin_devstack.kafka_mock --brokers 3 --topic tasks:12
--control-port P --ready-file F``; it runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib.util import find_spec
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from .kafka_control import ErrorCode

RD_KAFKA_PRODUCER = 0
ERRSTR_SIZE = 512


class MockError(RuntimeError):
    """A mock-cluster call returned an error code (``rd_kafka_resp_err_t``)."""

    def __init__(self, what: str, code: int, name: str) -> None:
        super().__init__(f"{what}: {name} ({code})")
        self.code = code


def find_librdkafka() -> Path:
    """The librdkafka shared object to load: $SPATIALJOIN_LIBRDKAFKA, the wheel's, or the system's.

    The wheel's copy is preferred because it is the one confluent-kafka's own
    clients use here, so client and mock agree on protocol versions.
    """
    override = os.environ.get("SPATIALJOIN_LIBRDKAFKA")
    if override:
        return Path(override)
    spec = find_spec("confluent_kafka")
    if spec is not None and spec.origin is not None:
        libs = Path(spec.origin).parent.parent / "confluent_kafka.libs"
        found = sorted(libs.glob("librdkafka*.so*"))
        if found:
            return found[0]
    system = ctypes.util.find_library("rdkafka")
    if system is None:
        raise FileNotFoundError("librdkafka not found: install confluent-kafka")
    return Path(system)


class _Lib:
    """Typed access to the librdkafka functions the mock host calls."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        vp, cp, i32, i16, sz = (
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.c_int16,
            ctypes.c_size_t,
        )
        self._f = lib
        self.has_errors_array = hasattr(lib, "rd_kafka_mock_push_request_errors_array")
        self.has_rebalance_delay = hasattr(lib, "rd_kafka_mock_group_initial_rebalance_delay_ms")
        protos: dict[str, tuple[Any, list[Any]]] = {
            "rd_kafka_version_str": (cp, []),
            "rd_kafka_err2name": (cp, [ctypes.c_int]),
            "rd_kafka_conf_new": (vp, []),
            "rd_kafka_conf_set": (ctypes.c_int, [vp, cp, cp, cp, sz]),
            "rd_kafka_conf_destroy": (None, [vp]),
            "rd_kafka_new": (vp, [ctypes.c_int, vp, cp, sz]),
            "rd_kafka_destroy": (None, [vp]),
            "rd_kafka_mock_cluster_new": (vp, [vp, ctypes.c_int]),
            "rd_kafka_mock_cluster_destroy": (None, [vp]),
            "rd_kafka_mock_cluster_bootstraps": (cp, [vp]),
            "rd_kafka_mock_topic_create": (ctypes.c_int, [vp, cp, ctypes.c_int, ctypes.c_int]),
            "rd_kafka_mock_broker_set_down": (ctypes.c_int, [vp, i32]),
            "rd_kafka_mock_broker_set_up": (ctypes.c_int, [vp, i32]),
            "rd_kafka_mock_broker_set_rtt": (ctypes.c_int, [vp, i32, ctypes.c_int]),
            "rd_kafka_mock_clear_request_errors": (None, [vp, i16]),
            # Variadic: only the fixed part is declared; the codes go as c_int.
            "rd_kafka_mock_push_request_errors": (None, [vp, i16, sz]),
        }
        if self.has_errors_array:
            protos["rd_kafka_mock_push_request_errors_array"] = (
                None,
                [vp, i16, sz, ctypes.POINTER(ctypes.c_int)],
            )
        if self.has_rebalance_delay:
            protos["rd_kafka_mock_group_initial_rebalance_delay_ms"] = (None, [vp, i32])
        for name, (restype, argtypes) in protos.items():
            func = getattr(lib, name)
            func.restype = restype
            func.argtypes = argtypes

    def call(self, name: str, *args: Any) -> Any:
        """Call a declared function; callers convert the result to a precise type."""
        return getattr(self._f, name)(*args)

    def version(self) -> str:
        return bytes(self.call("rd_kafka_version_str")).decode()

    def err_name(self, code: int) -> str:
        return bytes(self.call("rd_kafka_err2name", code)).decode()

    def check(self, what: str, code: int) -> None:
        """Raise MockError unless ``code`` is RD_KAFKA_RESP_ERR_NO_ERROR."""
        if code != 0:
            raise MockError(what, code, self.err_name(code))


class MockCluster:
    """A running mock cluster with ``brokers`` brokers (ids 1..n) listening on 127.0.0.1.

    The cluster needs an rd_kafka_t for bookkeeping; an idle producer handle
    with no bootstrap servers serves, and is destroyed after the cluster.
    """

    def __init__(self, brokers: int, *, lib_path: Path | None = None, debug: bool = False) -> None:
        if brokers < 1:
            raise ValueError("a mock cluster needs at least one broker")
        self.lib = _Lib(lib_path or find_librdkafka())
        self.broker_count = brokers
        self._rk = self._new_handle(debug)
        cluster = self.lib.call("rd_kafka_mock_cluster_new", self._rk, brokers)
        if not cluster:
            self.lib.call("rd_kafka_destroy", self._rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed (see log)")
        self._cluster = ctypes.c_void_p(cluster)
        self._lock = threading.Lock()

    def _new_handle(self, debug: bool) -> ctypes.c_void_p:
        conf = self.lib.call("rd_kafka_conf_new")
        # Level 4 hides the "no bootstrap.servers" notice of this idle handle.
        settings = {"client.id": "spatialjoin-kafka-mock", "log_level": "7" if debug else "4"}
        if debug:
            settings["debug"] = "mock"
        for key, value in settings.items():
            self._conf_set(conf, key, value)
        errstr = ctypes.create_string_buffer(ERRSTR_SIZE)
        rk = self.lib.call("rd_kafka_new", RD_KAFKA_PRODUCER, conf, errstr, ERRSTR_SIZE)
        if not rk:
            self.lib.call("rd_kafka_conf_destroy", conf)
            raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
        return ctypes.c_void_p(rk)

    def _conf_set(self, conf: int, key: str, value: str) -> None:
        errstr = ctypes.create_string_buffer(ERRSTR_SIZE)
        result = int(
            self.lib.call(
                "rd_kafka_conf_set", conf, key.encode(), value.encode(), errstr, ERRSTR_SIZE
            )
        )
        if result != 0:
            raise ValueError(f"rd_kafka_conf_set {key}: {errstr.value.decode()}")

    @property
    def bootstraps(self) -> str:
        """Comma-separated ``127.0.0.1:port`` list of all brokers."""
        return bytes(self.lib.call("rd_kafka_mock_cluster_bootstraps", self._cluster)).decode()

    def create_topic(
        self, name: str, partitions: int, replication_factor: int | None = None
    ) -> None:
        """Create a topic; the replication factor defaults to min(3, brokers) like Kafka's."""
        rf = replication_factor or min(3, self.broker_count)
        if partitions < 1 or not 1 <= rf <= self.broker_count:
            raise MockError(f"create topic {name}", ErrorCode.INVALID_ARG, "_INVALID_ARG")
        code = self.lib.call(
            "rd_kafka_mock_topic_create", self._cluster, name.encode(), partitions, rf
        )
        self.lib.check(f"create topic {name}", int(code))

    def broker_down(self, broker_id: int) -> None:
        """Disconnect the broker and refuse new connections (no leader change)."""
        code = self.lib.call("rd_kafka_mock_broker_set_down", self._cluster, broker_id)
        self.lib.check(f"broker {broker_id} down", int(code))

    def broker_up(self, broker_id: int) -> None:
        code = self.lib.call("rd_kafka_mock_broker_set_up", self._cluster, broker_id)
        self.lib.check(f"broker {broker_id} up", int(code))

    def set_rtt(self, broker_id: int, ms: int) -> None:
        code = self.lib.call("rd_kafka_mock_broker_set_rtt", self._cluster, broker_id, ms)
        self.lib.check(f"broker {broker_id} rtt", int(code))

    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None:
        """Make the next len(errors) requests of api_key fail with these codes, in order."""
        if not errors:
            return
        if self.lib.has_errors_array:
            array = (ctypes.c_int * len(errors))(*errors)
            self.lib.call(
                "rd_kafka_mock_push_request_errors_array",
                self._cluster,
                api_key,
                len(errors),
                array,
            )
            return
        codes = [ctypes.c_int(e) for e in errors]
        self.lib.call(
            "rd_kafka_mock_push_request_errors", self._cluster, api_key, len(errors), *codes
        )

    def clear_request_errors(self, api_key: int) -> None:
        self.lib.call("rd_kafka_mock_clear_request_errors", self._cluster, api_key)

    def set_group_rebalance_delay(self, ms: int) -> None:
        """group.initial.rebalance.delay.ms of the mock coordinator (3000 by default)."""
        if self.lib.has_rebalance_delay:
            self.lib.call("rd_kafka_mock_group_initial_rebalance_delay_ms", self._cluster, ms)

    def destroy(self) -> None:
        """Close the listeners and free the cluster, then its bookkeeping handle."""
        with self._lock:
            if self._cluster:
                self.lib.call("rd_kafka_mock_cluster_destroy", self._cluster)
                self._cluster = ctypes.c_void_p(None)
                self.lib.call("rd_kafka_destroy", self._rk)


class ClusterOps(Protocol):
    """What the control channel needs of a cluster (a fake in unit tests)."""

    broker_count: int

    @property
    def bootstraps(self) -> str: ...
    def create_topic(
        self, name: str, partitions: int, replication_factor: int | None = None
    ) -> None: ...
    def broker_down(self, broker_id: int) -> None: ...
    def broker_up(self, broker_id: int) -> None: ...
    def set_rtt(self, broker_id: int, ms: int) -> None: ...
    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None: ...
    def clear_request_errors(self, api_key: int) -> None: ...


class BadRequest(ValueError):
    """The control request is malformed; answered with 400 or 404."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


Reply = tuple[HTTPStatus, dict[str, Any]]
_BROKER_PATH = re.compile(r"^/brokers/(-?\d+)/(down|up|rtt)$")
_ERRORS_PATH = re.compile(r"^/errors/(\d+)$")


def handle_control(cluster: ClusterOps, method: str, path: str, body: dict[str, Any]) -> Reply:
    """Route one control request to the cluster; pure apart from the cluster calls."""
    try:
        return _route(cluster, method, path, body)
    except BadRequest as exc:
        return exc.status, {"error": str(exc)}
    except MockError as exc:
        return _mock_error_status(exc.code), {"error": str(exc), "code": exc.code}


def _route(cluster: ClusterOps, method: str, path: str, body: dict[str, Any]) -> Reply:
    ok = HTTPStatus.OK
    if (method, path) == ("GET", "/health"):
        return ok, {
            "status": "ok",
            "bootstrap": cluster.bootstraps,
            "brokers": cluster.broker_count,
        }
    if (method, path) == ("POST", "/topics"):
        name, partitions = _str_field(body, "name"), _int_field(body, "partitions")
        rf = _int_field(body, "replication_factor") if "replication_factor" in body else None
        cluster.create_topic(name, partitions, rf)
        return HTTPStatus.CREATED, {"name": name, "partitions": partitions}
    if (method, path) == ("POST", "/errors"):
        api_key, errors = _int_field(body, "api_key"), _int_list(body, "errors")
        cluster.push_request_errors(api_key, errors)
        return ok, {"api_key": api_key, "pushed": len(errors)}
    if method == "DELETE" and (match := _ERRORS_PATH.match(path)):
        cluster.clear_request_errors(int(match.group(1)))
        return ok, {"api_key": int(match.group(1)), "cleared": True}
    if method == "POST" and (match := _BROKER_PATH.match(path)):
        return _broker_action(cluster, int(match.group(1)), match.group(2), body)
    raise BadRequest(f"no such endpoint: {method} {path}", HTTPStatus.NOT_FOUND)


def _broker_action(cluster: ClusterOps, broker_id: int, action: str, body: dict[str, Any]) -> Reply:
    actions: dict[str, Callable[[], None]] = {
        "down": lambda: cluster.broker_down(broker_id),
        "up": lambda: cluster.broker_up(broker_id),
        "rtt": lambda: cluster.set_rtt(broker_id, _int_field(body, "ms")),
    }
    actions[action]()
    return HTTPStatus.OK, {"broker": broker_id, "action": action}


_STATUS_OF_ERROR: dict[int, HTTPStatus] = {
    ErrorCode.TOPIC_ALREADY_EXISTS: HTTPStatus.CONFLICT,
    ErrorCode.UNKNOWN_BROKER: HTTPStatus.NOT_FOUND,
    ErrorCode.BROKER_NOT_AVAILABLE: HTTPStatus.NOT_FOUND,
    ErrorCode.INVALID_ARG: HTTPStatus.BAD_REQUEST,
}


def _mock_error_status(code: int) -> HTTPStatus:
    return _STATUS_OF_ERROR.get(code, HTTPStatus.INTERNAL_SERVER_ERROR)


def _int_field(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"'{key}' must be an integer")
    return value


def _str_field(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{key}' must be a non-empty string")
    return value


def _int_list(body: dict[str, Any], key: str) -> list[int]:
    value = body.get(key)
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise BadRequest(f"'{key}' must be a list of integers")
    return list(value)


class ControlServer(HTTPServer):
    """The control channel; one request at a time keeps fault injection ordered."""

    def __init__(self, port: int, cluster: ClusterOps) -> None:
        super().__init__(("127.0.0.1", port), _ControlHandler)
        self.cluster = cluster

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ControlHandler(BaseHTTPRequestHandler):
    server: ControlServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        try:
            body = self._read_body()
        except BadRequest as exc:
            status, reply = exc.status, {"error": str(exc)}
        else:
            status, reply = handle_control(self.server.cluster, method, self.path, body)
        payload = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            data = json.loads(self.rfile.read(length))
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object")
        return data


def parse_topic_spec(spec: str) -> tuple[str, int]:
    """``NAME:PARTITIONS`` from the command line into (name, partitions)."""
    name, sep, count = spec.rpartition(":")
    if not sep or not name or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"topic must be NAME:PARTITIONS, got {spec!r}")
    return name, int(count)


def write_ready_file(path: Path, info: dict[str, str]) -> None:
    """Write the ready file atomically, so a poller never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m spatialjoin_devstack.kafka_mock")
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--topic", type=parse_topic_spec, action="append", default=[])
    parser.add_argument("--control-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument(
        "--group-rebalance-delay-ms",
        type=int,
        default=0,
        help="the mock's default is 3000; 0 makes consumer groups assign at once",
    )
    parser.add_argument("--debug", action="store_true", help="librdkafka mock debug logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the cluster and control channel, announce them, serve until SIGTERM/SIGINT."""
    args = _parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster = MockCluster(args.brokers, debug=args.debug)
    try:
        cluster.set_group_rebalance_delay(args.group_rebalance_delay_ms)
        for name, partitions in args.topic:
            cluster.create_topic(name, partitions)
        _serve_until(stop, cluster, args.control_port, args.ready_file)
    finally:
        cluster.destroy()
    print("kafka mock stopped: cluster destroyed", flush=True)
    return 0


def _serve_until(stop: threading.Event, cluster: MockCluster, port: int, ready_file: Path) -> None:
    server = ControlServer(port, cluster)
    thread = threading.Thread(target=server.serve_forever, name="kafka-control", daemon=True)
    thread.start()
    try:
        write_ready_file(ready_file, {"bootstrap": cluster.bootstraps, "control": server.url})
        print(
            f"librdkafka {cluster.lib.version()} mock cluster: {cluster.bootstraps}; "
            f"control {server.url}",
            flush=True,
        )
        stop.wait()
    finally:
        ready_file.unlink(missing_ok=True)
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":
    sys.exit(main())
