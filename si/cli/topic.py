"""``si topic``: named streams between instances and clients.

``send`` publishes a file, or stdin, into a topic; ``get`` copies a topic to stdout until
interrupted. The content type is fixed per topic; ``-t`` says which one a command means.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import click

from si.cli.common import (
    FILE,
    AliasGroup,
    StringParam,
    binary_stdin,
    command,
    existing_file,
    group,
    state,
)
from si.errors import SiError

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

app: AliasGroup = group("topic", "Create, list, feed and read topics.")

CONTENT_TYPES = ("application/x-ndjson", "text/x-ndjson", "text/plain", "application/octet-stream")
DEFAULT_CONTENT_TYPE = "application/x-ndjson"
# STH's client-side check of topic names (letters, digits, _, +, -, backslash).
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_+\-\\]+$")


def _name(value: str) -> str:
    if not _TOPIC_NAME.match(value):
        raise SiError("Invalid topic name")
    return value


content_type_option = click.option(
    "-t",
    "--content-type",
    type=click.Choice(CONTENT_TYPES),
    default=DEFAULT_CONTENT_TYPE,
    show_default=True,
    help="The topic's content type.",
)


class TopicName(StringParam):
    """A topic name; completes the hub's topics."""

    name = "topic"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        from si.cli.common import COMPLETION_CONNECT_TIMEOUT

        try:
            with state(ctx).client(connect_timeout=COMPLETION_CONNECT_TIMEOUT) as client:
                topics = client.list_topics()
        except Exception:
            return []
        names = [topic_name(t) for t in topics]
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]


TOPIC = TopicName()


def topic_name(record: object) -> str:
    """The name in one entry of ``GET topics``: STH sends ``topic`` and ``topicName``; a
    ``POST topics`` reply and older hubs say ``id``."""
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        for key in ("topic", "topicName", "id"):
            if isinstance(record.get(key), str):
                return str(record[key])
    return ""


@command(app, "ls", "list", example="si topic ls")
def list_topics() -> None:
    """List the hub's topics."""
    cli = state()
    with cli.client() as client:
        records = client.list_topics()
    rows = []
    for record in records:
        item = record if isinstance(record, dict) else {}
        rows.append([topic_name(record), item.get("contentType"), item.get("localProvider")])
    cli.renderer.table(["NAME", "CONTENT-TYPE", "PROVIDER"], rows, records)


@command(
    app,
    "create",
    example=["si topic create cities -t text/plain", "si topic create orders --cluster"],
)
@click.argument("name", metavar="NAME", type=TOPIC)
@content_type_option
@click.option(
    "--cluster/--local",
    default=None,
    help="A topic of the hub's whole cluster (a JetStream stream), or of this hub only "
    "(default: the hub's --cluster-topics).",
)
def create(name: str, content_type: str, cluster: bool | None) -> None:
    """Create a topic."""
    cli = state()
    with cli.client() as client:
        reply = client.create_topic(_name(name), content_type, cluster)
    cli.renderer.show(reply)


@command(app, "rm", "delete", example="si topic rm cities")
@click.argument("name", metavar="NAME", type=TOPIC)
def remove(name: str) -> None:
    """Delete a topic."""
    cli = state()
    with cli.client() as client:
        reply = client.delete_topic(_name(name))
    cli.renderer.show(reply)


@command(app, "send", example=["si topic send cities cities.ndjson", "echo '{}' | si topic send t"])
@click.argument("name", metavar="NAME", type=TOPIC)
@click.argument("file", metavar="[FILE]", required=False, type=FILE)
@content_type_option
def send(name: str, file: str | None, content_type: str) -> None:
    """Publish a file, or stdin, into a topic."""
    cli = state()
    topic = _name(name)
    body = binary_stdin("the data") if file is None else existing_file(file).open("rb")
    try:
        with cli.client() as client:
            client.send_topic(topic, body, content_type)
    finally:
        body.close()


@command(app, "get", example="si topic get cities | head")
@click.argument("name", metavar="NAME", type=TOPIC)
@content_type_option
def get(name: str, content_type: str) -> None:
    """Copy a topic's data to stdout as it is published (until interrupted)."""
    cli = state()
    topic = _name(name)
    with cli.client() as client:
        cli.renderer.stream(client.topic_stream(topic, content_type))
