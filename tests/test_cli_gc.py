"""``moorage gc``: a collection of a running ``moorage serve``'s data, as an operator runs it
beside the registry (online), and ``GET``/``POST /v2/_moorage/gc``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import moorage_cli
from tests.support.http import push_image, request
from tests.support.images import seeded_image
from tests.support.server import start_moorage

#: Everything unreferenced may go at once (the bytes in the run after).
GC_NOW = {"MOORAGE_GC_GRACE": "0", "MOORAGE_GC_UNTAGGED_AFTER": "0"}


def test_gc_beside_a_running_registry(tmp_path: Path) -> None:
    registry = start_moorage(tmp_path / "registry", env=GC_NOW)
    try:
        address = registry.address
        kept = push_image(address, "team/app", seeded_image("kept"), "v1")
        loose = push_image(address, "team/app", seeded_image("loose"))
        env = {**GC_NOW, "MOORAGE_DATA": str(registry.data)}

        dry = moorage_cli("gc", "--dry-run", "--quiet", env=env).stdout
        assert "garbage collection (dry run: nothing changed)" in dry
        assert f"  delete manifest {loose.digest}" in dry
        assert "keep manifest   sha256:" in dry and ": tag team/app:v1" in dry
        assert request(address, "HEAD", f"/v2/team/app/manifests/{loose.digest}").status == 200

        first = json.loads(moorage_cli("gc", "--json", "--quiet", env=env).stdout)
        assert first["manifests_deleted"] == 1
        assert {d["digest"] for d in first["retired"]} == {b.digest for b in loose.all_blobs}
        assert request(address, "HEAD", f"/v2/team/app/manifests/{loose.digest}").status == 404

        second = json.loads(moorage_cli("gc", "--json", "--quiet", env=env).stdout)
        assert {d["digest"] for d in second["deleted"]} == {b.digest for b in loose.all_blobs}
        assert second["bytes_freed"] == sum(b.size for b in loose.all_blobs)
        for blob in loose.all_blobs:
            assert request(address, "GET", f"/v2/team/app/blobs/{blob.digest}").status == 404
        for blob in kept.all_blobs:
            reply = request(address, "GET", f"/v2/team/app/blobs/{blob.digest}")
            assert (reply.status, reply.body) == (200, blob.data)

        # The same through the API: a dry run, then a run, each answering its report.
        again = push_image(address, "team/app", seeded_image("again"))
        dry_api = request(address, "GET", "/v2/_moorage/gc")
        assert dry_api.status == 200
        report = json.loads(dry_api.body)
        assert report["dry_run"] is True
        assert [m["digest"] for r in report["repositories"] for m in r["deleted_manifests"]] == [
            again.digest
        ]
        run = json.loads(request(address, "POST", "/v2/_moorage/gc?summary").body)
        assert run["dry_run"] is False and run["manifests_deleted"] == 1
        assert run["repositories"][0]["deleted_manifests"] == 1
        assert run["retired"] == {
            "count": len(again.all_blobs),
            "bytes": sum(b.size for b in again.all_blobs),
        }

        summary = json.loads(moorage_cli("gc", "--json", "--summary", "--quiet", env=env).stdout)
        assert summary["deleted"]["count"] == len(again.all_blobs)
        assert summary["repositories"][0]["kept_manifests"] == 1
    finally:
        registry.stop()


def test_gc_refuses_the_memory_driver() -> None:
    result = moorage_cli("gc", "--storage", "memory", "--workers", "1", status=2)
    assert "the memory storage driver keeps nothing to collect" in result.stderr
