"""The submission API in-process on 127.0.0.1 against the real apiserver (CRDs applied):
idempotency under racing duplicates, auth (file and Secret tokens), validation, the wait cap,
and a small bounded load run through `spatialjoin bench api`."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import typer
from kubernetes import client
from typer.testing import CliRunner

from spatialjoin_cli.bench_api_cmd import api as bench_api
from spatialjoin_contracts import api, samples
from spatialjoin_operator import submission, submission_api
from spatialjoin_operator.diagnose.kube import api_client
from spatialjoin_operator.submission import ApiSettings
from tests.integration.test_crds_apiserver import crds  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

TOKEN = "integration-token"
Check = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def serve(settings: ApiSettings, check: Check) -> None:
    """Start the API (port 0 on 127.0.0.1), run ``check(session, base_url)``, stop it."""
    async def main() -> None:
        server = await submission_api.start(settings, api_client())
        try:
            async with aiohttp.ClientSession() as session:
                await check(session, f"http://127.0.0.1:{server.port}")
        finally:
            await server.stop()
    asyncio.run(main())


@pytest.fixture
def settings(crds: None, namespace: str, tmp_path: Path,  # noqa: F811
             stack_env: dict[str, str]) -> ApiSettings:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return ApiSettings(enabled=True, addr="127.0.0.1", port=0, namespace=namespace,
                       token_file=token_file, max_wait_s=1.0, poll_interval_s=0.2)


def jobs(kube_api: Any, namespace: str) -> list[dict[str, Any]]:
    listing = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.JOB_PLURAL)
    return list(listing["items"])


def headers(trace: str | None = None, token: str | None = TOKEN) -> dict[str, str]:
    found = {"Content-Type": "application/json"}
    if trace is not None:
        found[submission.TRACE_HEADER] = trace
    if token is not None:
        found["Authorization"] = f"Bearer {token}"
    return found


BODY = json.dumps(samples.job_spec())


def test_racing_duplicates_create_one_job(settings: ApiSettings, kube_api: Any) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        async def post() -> tuple[int, dict[str, Any], str]:
            async with session.post(f"{base}/v1/joins", data=BODY,
                                    headers=headers("req-42")) as resp:
                return resp.status, await resp.json(), resp.headers.get("Location", "")

        answers = await asyncio.gather(*(post() for _ in range(10)))
        assert {status for status, _, _ in answers} == {202}
        assert {location for _, _, location in answers} == {"/v1/joins/req-42"}
        assert len({body["job"]["uid"] for _, body, _ in answers}) == 1
        assert sum(body["created"] for _, body, _ in answers) == 1
        async with session.get(f"{base}/v1/joins/req-42", headers=headers()) as resp:
            view = await resp.json()
            assert resp.status == 200 and view["traceId"] == "req-42" and not view["done"]

    serve(settings, check)
    (job,) = jobs(kube_api, settings.namespace)
    assert job["metadata"]["name"] == submission.job_name("req-42")
    assert job["spec"]["traceId"] == "req-42"
    assert job["metadata"]["annotations"][submission.TRACE_ANNOTATION] == "req-42"


def test_auth_and_validation_create_nothing(settings: ApiSettings, kube_api: Any) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        for token in (None, "wrong"):
            async with session.post(f"{base}/v1/joins", data=BODY,
                                    headers=headers("req-1", token)) as resp:
                assert resp.status == 401
        bad = json.dumps(samples.job_spec(output={"uriPrefix": "file:///tmp"}))
        async with session.post(f"{base}/v1/joins", data=bad, headers=headers("req-1")) as resp:
            problem = await resp.json()
            assert resp.status == 400
            assert problem["errors"][0]["field"] == "spec.output.uriPrefix"
        async with session.post(f"{base}/v1/joins", data=BODY, headers=headers()) as resp:
            assert resp.status == 400 and "X-Request-Trace-ID" in (await resp.json())["detail"]
        async with session.get(f"{base}/openapi.json") as resp:
            document = await resp.json()
            assert resp.status == 200 and "/v1/joins/{traceId}" in document["paths"]

    serve(settings, check)
    assert jobs(kube_api, settings.namespace) == []


def test_same_trace_id_other_join_is_422(settings: ApiSettings) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        async with session.post(f"{base}/v1/joins", data=BODY, headers=headers("req-7")) as resp:
            assert resp.status == 202
        other = json.dumps(samples.job_spec(partitions=["p01"]))
        async with session.post(f"{base}/v1/joins", data=other, headers=headers("req-7")) as resp:
            assert resp.status == 422

    serve(settings, check)


def test_wait_is_capped_then_answers_200_when_done(settings: ApiSettings,
                                                    kube_api: Any) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        async with session.post(f"{base}/v1/joins", data=BODY, headers=headers("req-9")) as resp:
            assert resp.status == 202
        started = time.monotonic()
        async with session.get(f"{base}/v1/joins/req-9?wait=600", headers=headers()) as resp:
            assert resp.status == 202
        held = time.monotonic() - started
        assert 0.9 <= held < 3.0, held  # capped at max_wait_s = 1 (slack for a busy machine)

        result = {"partition": "p00", "uri": "s3://spatialjoin-results/jobs/req-9/p00.parquet",
                  "rows": 3, "bytes": 100, "sha256": "a" * 64}
        await asyncio.to_thread(
            client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status,
            api.GROUP, api.VERSION, settings.namespace, api.JOB_PLURAL,
            submission.job_name("req-9"),
            {"status": {"phase": "Succeeded", "traceId": "req-9", "results": [result]}})
        async with session.get(f"{base}/v1/joins/req-9?wait=1", headers=headers()) as resp:
            view = await resp.json()
            assert resp.status == 200 and view["done"] and view["results"] == [result]

    serve(settings, check)


def test_token_from_a_secret(settings: ApiSettings, kube_api: Any) -> None:
    client.CoreV1Api(kube_api).create_namespaced_secret(settings.namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="api-token"),
        data={"token": base64.b64encode(b"from-secret").decode()}))
    from_secret = settings.model_copy(update={"token_file": None, "token_secret": "api-token"})

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        async with session.post(f"{base}/v1/joins", data=BODY,
                                headers=headers("req-s", TOKEN)) as resp:
            assert resp.status == 401
        async with session.post(f"{base}/v1/joins", data=BODY,
                                headers=headers("req-s", "from-secret")) as resp:
            assert resp.status == 202

    serve(from_secret, check)
    assert [j["spec"]["traceId"] for j in jobs(kube_api, settings.namespace)] == ["req-s"]


def test_refuses_to_serve_without_a_token_source(settings: ApiSettings) -> None:
    with pytest.raises(ValueError, match="refusing to serve without auth"):
        submission_api.token_source(settings.model_copy(update={"token_file": None}),
                                    api_client())


def test_bench_api_small_bounded_run(crds: None, tmp_path: Path,  # noqa: F811
                                     stack_env: dict[str, str]) -> None:
    app = typer.Typer()
    app.command()(bench_api)
    result = CliRunner().invoke(app, ["--clients", "4", "--requests", "40", "--duplicates", "4",
                                      "--duration", "30", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "api.json").read_text())
    assert figures["idempotency"]["ok"], figures["idempotency"]
    assert figures["idempotency"]["jobs"] == figures["distinct_trace_ids"] == 10
    assert figures["post"]["codes"] == {"202": 40}
    assert figures["get"]["codes"] == {"200": 40}
    assert figures["post"]["rps"] > 0 and figures["post"]["p99_ms"] > 0
