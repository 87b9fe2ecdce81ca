"""The submission API's HTTP behaviour in-process (loopback), against a fake job store."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from spatialjoin_contracts import samples
from spatialjoin_operator import submission
from spatialjoin_operator.submission import ApiSettings
from spatialjoin_operator.submission_api import AlreadyExists, FileTokens, create_app

pytestmark = pytest.mark.unit

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeStore:
    """Jobs by name; create refuses a taken name like the apiserver (409)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.creates = 0
        self.gets = 0
        self.slow_after: int | None = None
        """Reads after this many are slow (3 s), as from an overloaded apiserver."""

    async def get(self, name: str) -> dict[str, Any] | None:
        self.gets += 1
        if self.slow_after is not None and self.gets > self.slow_after:
            await asyncio.sleep(3.0)
        return self.jobs.get(name)

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01)  # let concurrent requests interleave
        name = manifest["metadata"]["name"]
        if name in self.jobs:
            raise AlreadyExists(name)
        self.creates += 1
        body = json.loads(json.dumps(dict(manifest)))
        body["metadata"]["uid"] = str(uuid.uuid4())
        self.jobs[name] = body
        return body


class Tokens:
    async def tokens(self) -> list[str]:
        return [TOKEN]


def run(store: FakeStore, test: Callable[[TestClient[Any, Any]], Awaitable[None]],
        **settings: Any) -> None:
    async def main() -> None:
        app = create_app(ApiSettings(**{"max_wait_s": 0.5, "poll_interval_s": 0.05,
                                        "namespace": "jobs", **settings}), store, Tokens())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await test(client)
    asyncio.run(main())


def spec_body(**overrides: Any) -> str:
    return json.dumps(samples.job_spec(**overrides))


def post_headers(trace: str, token: str | None = TOKEN) -> dict[str, str]:
    headers = {"X-Request-Trace-ID": trace, "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@pytest.mark.parametrize("token", [None, "wrong"])
def test_without_a_valid_token_nothing_is_created(token: str | None) -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/v1/joins", data=spec_body(),
                                 headers=post_headers("t-1", token))
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.content_type == "application/problem+json"
        resp = await client.get("/v1/joins/t-1", headers=post_headers("t-1", token))
        assert resp.status == 401

    run(store, test)
    assert store.jobs == {} and store.creates == 0


def test_openapi_and_health_need_no_token() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/openapi.json")
        assert resp.status == 200 and "/v1/joins" in (await resp.json())["paths"]
        assert (await client.get("/healthz")).status == 200

    run(FakeStore(), test)


def test_post_is_idempotent_and_returns_the_location() -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        first = await client.post("/v1/joins", data=spec_body(), headers=post_headers("t-1"))
        assert first.status == 202 and first.headers["Location"] == "/v1/joins/t-1"
        one = await first.json()
        assert one["created"] is True and one["traceId"] == "t-1"
        again = await client.post("/v1/joins", data=spec_body(), headers=post_headers("t-1"))
        two = await again.json()
        assert again.status == 202 and two["created"] is False
        assert two["job"]["uid"] == one["job"]["uid"]

    run(store, test)
    assert store.creates == 1


def test_concurrent_duplicates_create_one_job() -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        async def post() -> dict[str, Any]:
            resp = await client.post("/v1/joins", data=spec_body(), headers=post_headers("race"))
            assert resp.status == 202
            return dict(await resp.json())

        answers = await asyncio.gather(*(post() for _ in range(8)))
        assert len({a["job"]["uid"] for a in answers}) == 1
        assert sum(a["created"] for a in answers) == 1

    run(store, test)
    assert store.creates == 1


def test_same_trace_id_with_another_join_is_refused() -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        await client.post("/v1/joins", data=spec_body(), headers=post_headers("t-1"))
        resp = await client.post("/v1/joins", data=spec_body(partitions=["p00"]),
                                 headers=post_headers("t-1"))
        assert resp.status == 422
        assert "different join" in (await resp.json())["detail"]

    run(store, test)
    assert store.creates == 1


@pytest.mark.parametrize(("data", "headers", "field"), [
    ("{nope", post_headers("t-1"), "body"),
    (json.dumps({"workerPoolRef": {"name": "p"}}), post_headers("t-1"), "spec.source"),
    (spec_body(), {**AUTH, "Content-Type": "application/json"}, "X-Request-Trace-ID"),
    (spec_body(), post_headers("bad trace"), "X-Request-Trace-ID"),
])
def test_malformed_requests_get_400_naming_the_field(data: str, headers: dict[str, str],
                                                     field: str) -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/v1/joins", data=data, headers=headers)
        assert resp.status == 400
        problem = await resp.json()
        assert field in [e["field"] for e in problem["errors"]]
        assert field in problem["detail"]

    run(store, test)
    assert store.creates == 0


def test_oversized_body_is_refused() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/v1/joins", data="x" * 5000, headers=post_headers("t-1"))
        assert resp.status == 413

    run(FakeStore(), test, max_body_bytes=1024)


def test_get_status_unknown_and_plain() -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        assert (await client.get("/v1/joins/nope", headers=AUTH)).status == 404
        await client.post("/v1/joins", data=spec_body(), headers=post_headers("t-1"))
        resp = await client.get("/v1/joins/t-1", headers=AUTH)
        assert resp.status == 200 and (await resp.json())["done"] is False
        assert (await client.get("/v1/joins/t-1?wait=soon", headers=AUTH)).status == 400

    run(store, test)


def test_wait_is_capped_and_answers_202_when_not_done() -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        await client.post("/v1/joins", data=spec_body(), headers=post_headers("t-1"))
        started = time.monotonic()
        resp = await client.get("/v1/joins/t-1?wait=3600", headers=AUTH)
        held = time.monotonic() - started
        assert resp.status == 202 and resp.headers["Retry-After"]
        assert 0.45 <= held < 2.0, held  # the cap is 0.5 s (slack for a loaded machine)

    run(store, test)


def test_wait_answers_200_as_soon_as_the_job_is_done() -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        await client.post("/v1/joins", data=spec_body(), headers=post_headers("t-1"))

        async def finish() -> None:
            await asyncio.sleep(0.15)
            store.jobs[submission.job_name("t-1")]["status"] = {"phase": "Succeeded"}

        started = time.monotonic()
        resp, _ = await asyncio.gather(client.get("/v1/joins/t-1?wait=10", headers=AUTH),
                                       finish())
        assert resp.status == 200 and (await resp.json())["done"] is True
        assert time.monotonic() - started < 1.5

    run(store, test, max_wait_s=5.0)


def test_a_slow_apiserver_does_not_stretch_the_wait() -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        await client.post("/v1/joins", data=spec_body(), headers=post_headers("t-1"))
        store.slow_after = store.gets + 1  # the first read is quick, every poll takes 3 s
        started = time.monotonic()
        resp = await client.get("/v1/joins/t-1?wait=30", headers=AUTH)
        assert resp.status == 202
        assert time.monotonic() - started < 2.5  # cap 1 s; unbounded, a poll alone takes 3 s

    run(store, test, max_wait_s=1.0)


def test_file_tokens_follow_rotation(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    tokens = FileTokens(path)
    assert asyncio.run(tokens.tokens()) == ["first"]
    path.write_text("second\nfirst-until-rollout\n")
    assert asyncio.run(tokens.tokens()) == ["second", "first-until-rollout"]


def test_a_stalled_apiserver_gets_504_not_a_hung_request() -> None:
    store = FakeStore()

    async def test(client: TestClient[Any, Any]) -> None:
        await client.post("/v1/joins", data=spec_body(), headers=post_headers("t-1"))
        store.slow_after = store.gets  # from now on every read takes 3 s
        started = time.monotonic()
        resp = await client.get("/v1/joins/t-1?wait=0", headers=AUTH)
        assert resp.status == 504
        assert time.monotonic() - started < 2.5  # FIRST_READ_S is 1 s

    run(store, test)
