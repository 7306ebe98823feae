"""Every real-client scenario of tests/clients, through the front door of three replicas.

The test functions are the single-registry ones, imported so that they run here with this
directory's ``registry`` and ``http`` fixtures.
"""

from __future__ import annotations

from tests.clients.test_buildah import test_build_from_scratch_and_push
from tests.clients.test_concurrency import (
    test_concurrent_pushes_of_one_image_to_one_tag,
    test_pulls_while_the_tag_is_repushed,
)
from tests.clients.test_containerd import test_pull_image, test_pull_multiarch
from tests.clients.test_helm import test_push_and_pull_chart
from tests.clients.test_oras import test_artifact_with_subject_and_referrers
from tests.clients.test_podman import test_push_and_pull, test_push_under_two_tags_and_pull_each
from tests.clients.test_skopeo import (
    test_copy_in_inspect_and_copy_out,
    test_docker_v2s2_pull,
    test_docker_v2s2_push,
    test_list_tags_and_delete,
    test_multiarch_copy_all_in,
    test_multiarch_copy_all_out,
)

__all__ = [
    "test_artifact_with_subject_and_referrers",
    "test_build_from_scratch_and_push",
    "test_concurrent_pushes_of_one_image_to_one_tag",
    "test_copy_in_inspect_and_copy_out",
    "test_docker_v2s2_pull",
    "test_docker_v2s2_push",
    "test_list_tags_and_delete",
    "test_multiarch_copy_all_in",
    "test_multiarch_copy_all_out",
    "test_pull_image",
    "test_pull_multiarch",
    "test_pulls_while_the_tag_is_repushed",
    "test_push_and_pull",
    "test_push_and_pull_chart",
    "test_push_under_two_tags_and_pull_each",
]
