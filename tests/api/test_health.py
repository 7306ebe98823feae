"""GET /livez and /readyz (moorage.api.health), on a real registry app (SQLite, filesystem):
ready while the metadata store and the storage answer, 503 naming what failed when one does
not, results reused for a second, no credentials asked, /v2/ routing untouched."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from moorage.api.health import Readiness, registry_readiness
from moorage.server import build_registry
from moorage.storage.base import StorageError
from tests.support.app import Client, RegistryEnv, assert_error
from tests.support.clocks import ManualClock
from tests.support.settings import make_settings


async def readyz(client: Client) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    return response.status, body


async def test_livez_answers_while_the_loop_runs(fs_env: RegistryEnv) -> None:
    response = await fs_env.client.get("/livez")
    assert response.status == 200
    assert await response.text() == "ok"


async def test_ready_when_the_store_and_the_storage_answer(fs_env: RegistryEnv) -> None:
    status, body = await readyz(fs_env.client)
    assert status == 200
    assert body == {"status": "ready", "checks": {"metadata": "ok", "storage": "ok"}}


async def test_a_broken_metadata_store_makes_it_unready(
    fs_env: RegistryEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(limit: int | None, last: str | None) -> list[str]:
        raise ConnectionRefusedError("the database is gone")

    monkeypatch.setattr(fs_env.registry.meta, "list_repositories", broken)
    status, body = await readyz(fs_env.client)
    assert status == 503
    assert body == {
        "status": "unavailable",
        "checks": {"metadata": "failed: ConnectionRefusedError", "storage": "ok"},
    }
    assert (await fs_env.client.get("/livez")).status == 200  # alive all the same


async def test_a_failing_storage_makes_it_unready(
    fs_env: RegistryEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(key: str) -> int | None:
        raise StorageError(f"cannot stat {key}: input/output error")

    monkeypatch.setattr(fs_env.registry.storage, "stat", failing)
    status, body = await readyz(fs_env.client)
    assert status == 503
    assert body["checks"] == {"metadata": "ok", "storage": "failed: StorageError"}


async def test_a_closed_store_is_not_ready(tmp_path: Any) -> None:
    settings = make_settings({"data": tmp_path / "data", "workers": 1})
    registry = build_registry(settings)
    readiness = registry_readiness(registry)
    assert await readiness.result() == (True, {"metadata": "ok", "storage": "ok"})
    await registry.meta.close()
    readiness = registry_readiness(registry)  # a fresh one: nothing cached
    ready, checks = await readiness.result()
    assert not ready
    assert checks == {"metadata": "failed: ProgrammingError", "storage": "ok"}
    await registry.storage.close()


async def test_probes_ask_for_no_credentials(secured: RegistryEnv) -> None:
    await assert_error(await secured.client.get("/v2/"), 401, "UNAUTHORIZED")
    assert (await secured.client.get("/livez")).status == 200
    status, _ = await readyz(secured.client)
    assert status == 200


async def test_repositories_named_like_the_probes_are_still_the_registrys(
    fs_env: RegistryEnv,
) -> None:
    for name in ("readyz", "livez", "metrics"):
        response = await fs_env.client.get(f"/v2/{name}/tags/list")
        await assert_error(response, 404, "NAME_UNKNOWN")


async def test_results_are_reused_for_the_ttl() -> None:
    clock = ManualClock(100.0)
    calls = 0
    failing = False

    async def check() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if failing:
            raise OSError("down")

    readiness = Readiness({"store": check}, ttl=1.0, clock=clock)
    # Probes arriving together share one run.
    results = await asyncio.gather(*(readiness.result() for _ in range(5)))
    assert calls == 1
    assert results == [(True, {"store": "ok"})] * 5
    failing = True
    clock.advance(0.9)
    assert await readiness.result() == (True, {"store": "ok"})  # still the cached one
    assert calls == 1
    clock.advance(0.2)
    assert await readiness.result() == (False, {"store": "failed: OSError"})
    assert calls == 2


async def test_a_check_that_never_answers_fails_after_the_timeout() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    async def answers() -> None:
        return None

    readiness = Readiness({"database": hangs, "storage": answers}, timeout=0.05)
    ready, checks = await readiness.result()
    assert not ready
    assert checks == {"database": "failed: no answer within 0.05 s", "storage": "ok"}
