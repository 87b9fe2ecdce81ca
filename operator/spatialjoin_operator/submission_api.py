"""The submission API: HTTP in front of SpatialJoinJob objects, served by the operator process.

    POST /v1/joins              X-Request-Trace-ID + a job spec → 202 + Location (idempotent)
    GET  /v1/joins/{traceId}    status and result objects; ?wait=N (capped) → 200 done / 202
    GET  /openapi.json          the OpenAPI document (no auth)
    GET  /healthz               liveness (no auth)

Enabled by SPATIALJOIN_API_ENABLED=true: a kopf startup handler starts it in
the operator's event loop (bound to SPATIALJOIN_API_ADDR, 127.0.0.1 by
default). Every decision lives in submission.py; this module moves bytes,
checks the token first (a request without a valid one creates nothing), and
calls the apiserver through the kubernetes client in a bounded thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Protocol, cast

import kopf
from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Histogram

from spatialjoin_contracts import api
from spatialjoin_contracts.models.pool import SecretKeySelector

from . import submission
from .connections import SecretMissing, read_secret_key
from .submission import ApiSettings, Existing, Problem

log = logging.getLogger("spatialjoin.api")

KUBE_TIMEOUT_S: Final = 10
FIRST_READ_S: Final = 1.0
"""The first read of a GET may take this long even with a shorter (or no) wait."""
JSON: Final = "application/json"
PROBLEM_JSON: Final = "application/problem+json"

REQUESTS = Counter("spatialjoin_api_requests_total", "Submission API requests.",
                   ["route", "code"])
LATENCY = Histogram("spatialjoin_api_request_seconds", "Submission API request latency.",
                    ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                        10, 30, 60))


class AlreadyExists(Exception):
    """The apiserver answered 409 to a create."""


class JobStore(Protocol):
    """The apiserver side, as the handlers need it (a fake in unit tests)."""

    async def get(self, name: str) -> dict[str, Any] | None: ...

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]: ...


class TokenSource(Protocol):
    async def tokens(self) -> list[str]: ...


# --- the apiserver ----------------------------------------------------------------------


class KubeJobStore:
    """SpatialJoinJobs in one namespace, through the kubernetes client in a thread pool."""

    def __init__(self, kube_api: client.ApiClient, namespace: str, threads: int = 16) -> None:
        self._custom = client.CustomObjectsApi(kube_api)
        self._namespace = namespace
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sj-api-kube")

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def get(self, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                return cast(dict[str, Any], self._custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, self._namespace, api.JOB_PLURAL, name,
                    _request_timeout=KUBE_TIMEOUT_S))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return cast(dict[str, Any] | None, await self._call(read))

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        def write() -> dict[str, Any]:
            try:
                return cast(dict[str, Any], self._custom.create_namespaced_custom_object(
                    api.GROUP, api.VERSION, self._namespace, api.JOB_PLURAL, dict(manifest),
                    _request_timeout=KUBE_TIMEOUT_S))
            except ApiException as exc:
                if exc.status == 409:
                    raise AlreadyExists(str(exc.reason)) from exc
                raise
        return cast(dict[str, Any], await self._call(write))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- tokens -----------------------------------------------------------------------------


class FileTokens:
    """Tokens from a file (a mounted Secret), re-read when it changes (rotation)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[float, int] | None = None
        self._tokens: list[str] = []

    async def tokens(self) -> list[str]:
        stat = self._path.stat()
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._stamp:
            self._tokens = submission.parse_tokens(self._path.read_text())
            self._stamp = stamp
        return self._tokens


class SecretTokens:
    """Tokens from a Secret key, refreshed every ``refresh_s`` (rotation without restart)."""

    def __init__(self, kube_api: client.ApiClient, namespace: str, name: str, key: str,
                 refresh_s: float) -> None:
        self._core = client.CoreV1Api(kube_api)
        self._selector = SecretKeySelector(name=name, key=key)
        self._namespace, self._refresh_s = namespace, refresh_s
        self._tokens: list[str] = []
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()

    async def tokens(self) -> list[str]:
        async with self._lock:
            if time.monotonic() - self._read_at >= self._refresh_s:
                try:
                    value = await asyncio.to_thread(read_secret_key, self._core, self._namespace,
                                                    self._selector)
                    self._tokens = submission.parse_tokens(value)
                except SecretMissing:
                    self._tokens = []  # fail closed: a deleted Secret revokes every token
                self._read_at = time.monotonic()
            return self._tokens


# --- handlers ---------------------------------------------------------------------------


def problem_response(problem: Problem) -> web.Response:
    return web.json_response(problem.to_json(), status=problem.status,
                             content_type=PROBLEM_JSON, headers=dict(problem.headers))


def job_response(body: Mapping[str, Any], status: int, **extra: Any) -> web.Response:
    view = submission.job_view(body)
    view.update(extra)
    headers = {"Location": view["location"]}
    if status == 202:
        headers["Retry-After"] = "2"
    return web.json_response(view, status=status, headers=headers)


class Handlers:
    def __init__(self, settings: ApiSettings, store: JobStore, tokens: TokenSource) -> None:
        self.settings, self.store, self.tokens = settings, store, tokens

    async def submit(self, request: web.Request) -> web.Response:
        trace = submission.check_trace_id(request.headers.get(submission.TRACE_HEADER))
        if isinstance(trace, Problem):
            return problem_response(trace)
        spec = submission.parse_submission(await request.read(), trace)
        if isinstance(spec, Problem):
            return problem_response(spec)
        name = submission.job_name(trace)
        existing = await self.store.get(name)
        if existing is None:
            manifest = submission.job_manifest(spec, trace, self.settings.namespace)
            try:
                created = await self.store.create(manifest)
                log.info("job %s/%s created for traceId %s", self.settings.namespace, name, trace)
                return job_response(created, 202, created=True)
            except AlreadyExists:
                existing = await self.store.get(name)  # a concurrent POST won the race
                if existing is None:
                    return problem_response(Problem(
                        503, "Service Unavailable", f"job {name!r} exists and vanished; retry",
                        headers={"Retry-After": "1"}))
        outcome = submission.compare_existing(existing, trace, spec)
        if outcome is Existing.REPLAY:
            return job_response(existing, 202, created=False)
        return problem_response(submission.existing_problem(outcome, trace, existing))

    async def status(self, request: web.Request) -> web.Response:
        trace = submission.check_trace_id(request.match_info["trace_id"])
        if isinstance(trace, Problem):
            return problem_response(trace)
        wait = submission.wait_seconds(request.query.get("wait"), self.settings.max_wait_s)
        if isinstance(wait, Problem):
            return problem_response(wait)
        waiting = "wait" in request.query
        deadline = asyncio.get_running_loop().time() + wait
        # With ?wait the first read too ends by the deadline (given at least FIRST_READ_S).
        first_read = max(wait, FIRST_READ_S) if waiting else float(KUBE_TIMEOUT_S)
        try:
            body = await asyncio.wait_for(self._job(trace), timeout=first_read)
        except TimeoutError:
            return problem_response(Problem(504, "Gateway Timeout",
                                            "the Kubernetes API did not answer in time"))
        if body is None:
            return problem_response(Problem(404, "Not Found", f"no job has traceId {trace!r}"))
        if not waiting:
            return job_response(body, 200)
        body = await self._wait(trace, body, deadline)
        return job_response(body, 200 if submission.finished(body) else 202)

    async def _job(self, trace: str) -> dict[str, Any] | None:
        body = await self.store.get(submission.job_name(trace))
        if body is None or submission.trace_of(body) != trace:
            return None
        return body

    async def _wait(self, trace: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Poll until finished or the deadline; never past it (a slow read is abandoned)."""
        loop = asyncio.get_running_loop()
        while not submission.finished(body):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(self.settings.poll_interval_s, remaining))
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                latest = await asyncio.wait_for(self._job(trace), timeout=remaining)
            except TimeoutError:
                break
            if latest is None:
                break  # deleted meanwhile: report what was last seen
            body = latest
        return body

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(submission.openapi_document(self.settings.max_wait_s))

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PUBLIC: Final = frozenset({"/openapi.json", "/healthz"})


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def create_app(settings: ApiSettings, store: JobStore, tokens: TokenSource) -> web.Application:
    handlers = Handlers(settings, store, tokens)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = _route(request)
        try:
            if request.path not in _PUBLIC and not submission.authorized(
                    request.headers.get("Authorization"), await tokens.tokens()):
                response: web.StreamResponse = problem_response(submission.UNAUTHORIZED)
            else:
                response = await handler(request)
        except web.HTTPException as exc:  # 404 of unknown paths, 405, 413 from aiohttp
            response = problem_response(Problem(exc.status, exc.reason, exc.text or exc.reason))
        except ApiException as exc:
            log.warning("apiserver error on %s %s: %s %s", request.method, request.path,
                        exc.status, exc.reason)
            response = problem_response(Problem(
                502, "Bad Gateway", f"the Kubernetes API answered {exc.status} {exc.reason}"))
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            response = problem_response(Problem(500, "Internal Server Error",
                                                f"{type(exc).__name__}: {exc}"))
        REQUESTS.labels(route, str(response.status)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - started)
        return response

    app = web.Application(middlewares=[guard], client_max_size=settings.max_body_bytes)
    app.router.add_post(submission.JOINS_PATH, handlers.submit)
    app.router.add_get(submission.JOINS_PATH + "/{trace_id}", handlers.status)
    app.router.add_get("/openapi.json", handlers.openapi)
    app.router.add_get("/healthz", handlers.health)
    return app


def token_source(settings: ApiSettings, kube_api: client.ApiClient) -> TokenSource:
    """The configured token source; refuses to start without one (fail closed)."""
    if settings.token_file is not None:
        return FileTokens(settings.token_file)
    if settings.token_secret:
        namespace, _, name = settings.token_secret.rpartition("/")
        return SecretTokens(kube_api, namespace or settings.namespace, name,
                            settings.token_secret_key, settings.token_refresh_s)
    raise ValueError("the submission API needs SPATIALJOIN_API_TOKEN_FILE or "
                     "SPATIALJOIN_API_TOKEN_SECRET; refusing to serve without auth")


# --- in the operator --------------------------------------------------------------------


class Server:
    """A running API: the aiohttp runner, its store and its Kubernetes client."""

    def __init__(self, runner: web.AppRunner, store: KubeJobStore,
                 kube_api: client.ApiClient) -> None:
        self.runner, self.store, self.kube_api = runner, store, kube_api

    @property
    def port(self) -> int:
        return int(self.runner.addresses[0][1])  # the bound port, also when 0 was asked

    async def stop(self) -> None:
        await self.runner.cleanup()
        self.store.close()
        self.kube_api.close()  # type: ignore[no-untyped-call]


async def start(settings: ApiSettings, kube_api: client.ApiClient | None = None) -> Server:
    """Serve the API in the running loop on settings.addr:settings.port."""
    from .diagnose.kube import api_client

    kube_api = kube_api or api_client()
    tokens = token_source(settings, kube_api)  # first: without auth, nothing else starts
    store = KubeJobStore(kube_api, settings.namespace, settings.kube_threads)
    app = create_app(settings, store, tokens)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.max_wait_s + 5)
    await runner.setup()
    await web.TCPSite(runner, settings.addr, settings.port).start()
    server = Server(runner, store, kube_api)
    log.info("submission API on %s:%s (jobs in namespace %s)", settings.addr, server.port,
             settings.namespace)
    return server


_SERVER: list[Server] = []


@kopf.on.startup()
async def start_submission_api(logger: kopf.Logger, **_: Any) -> None:
    """Start the API when SPATIALJOIN_API_ENABLED=true (the chart's api.enabled value)."""
    settings = ApiSettings()
    if not settings.enabled:
        return
    try:
        _SERVER.append(await start(settings))
    except ValueError as exc:  # no token source: a misconfiguration, do not retry forever
        raise kopf.PermanentError(str(exc)) from exc
    logger.info("submission API serving on %s:%s", settings.addr, _SERVER[-1].port)


@kopf.on.cleanup()
async def stop_submission_api(**_: Any) -> None:
    while _SERVER:
        await _SERVER.pop().stop()


# --- standalone (development, benchmarks) -----------------------------------------------


async def serve_until_stopped(settings: ApiSettings) -> None:
    """Serve until SIGTERM or SIGINT."""
    import signal

    server = await start(settings)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stopped.set)
    print(f"serving on {settings.addr}:{server.port}", flush=True)
    try:
        await stopped.wait()
    finally:
        await server.stop()


def main() -> None:
    """``python -m spatialjoin_operator.submission_api``: the API alone, without the operator."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve_until_stopped(ApiSettings()))


if __name__ == "__main__":
    main()
