"""Instance names and labels, sequence digests and packages, locks: what stacks build on."""

from __future__ import annotations

import io

import pytest

from si.client import HubClient, HubError
from si.package.digest import content_digest
from si.testing import python_package, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

IDLE = "import asyncio\n\nasync def run(context, input):\n    await asyncio.Future()\n"
DONE = "async def run(context, input):\n    yield 'done'\n"


def test_a_name_is_unique_among_live_instances_and_shown_with_labels(client: HubClient) -> None:
    sequence = client.send_sequence(python_package(IDLE))["id"]
    first = client.start_sequence(sequence, {"name": "web", "labels": {"team": "data"}})["id"]
    record = client.get_instance(first)
    assert (record["name"], record["labels"]) == ("web", {"team": "data"})
    with pytest.raises(HubError) as taken:
        client.start_sequence(sequence, {"name": "web"})
    assert taken.value.status == 409
    assert "named web exists" in str(taken.value)
    client.kill_instance(first)
    wait_for(lambda: client.get_instance(first)["status"] == "completed")
    second = client.start_sequence(sequence, {"name": "web"})["id"]  # free once it ended
    assert second != first
    client.kill_instance(second)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "has space", "name: letters"),
        ("name", "0123abcd-0123-4567-89ab-0123456789ab", "an instance id's shape"),
        ("labels", ["x"], "labels: an object"),
        ("labels", {"k": 1}, "labels: keys"),
    ],
)
def test_bad_names_and_labels_are_refused(
    client: HubClient, field: str, value: object, message: str
) -> None:
    sequence = client.send_sequence(python_package(DONE))["id"]
    with pytest.raises(HubError, match=message) as refused:
        client.start_sequence(sequence, {field: value})
    assert refused.value.status == 400


def test_a_sequence_lists_its_content_digest_and_gives_its_package_back(
    client: HubClient,
) -> None:
    package = python_package(DONE)
    sequence = client.send_sequence(package)["id"]
    digest = client.get_sequence(sequence)["digest"]
    assert digest == content_digest(io.BytesIO(package))
    again = client.get_package(sequence)
    assert content_digest(io.BytesIO(again)) == digest
    with pytest.raises(HubError) as missing:
        client.get_package("nope")
    assert missing.value.status == 404


def test_a_lock_is_held_until_released(client: HubClient) -> None:
    held = client.take_lock("stack", "me", 30)
    with pytest.raises(HubError) as busy:
        client.take_lock("stack", "you", 30)
    assert busy.value.status == 409
    assert "held by me" in str(busy.value)
    with pytest.raises(HubError):
        client.release_lock("stack", "wrong")
    client.release_lock("stack", held["key"])
    client.release_lock("stack", client.take_lock("stack", "you", 30)["key"])
