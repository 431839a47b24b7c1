"""Hubs joined into a cluster through NATS JetStream (``si hub serve --nats URL``).

Nothing here is imported by a hub started without ``--nats``, nor by the CLI: ``serve.py``
imports ``si.daemon.cluster.member`` only when it is asked to join, and only that module (and
what it imports) imports ``nats``. The sans-IO parts (``registry``) import neither nats nor trio.

- ``bridge``: nats-py is asyncio, the hub is trio; one asyncio loop on a thread of its own, and
  ``AsyncioThread.call`` runs one coroutine there for a trio task.
- ``registry``: the hub registry's entries, staleness and placement (sans-IO).
- ``member``: this hub in the cluster: connection, heartbeats, requests from other hubs,
  shared sequences.
- ``topics``: cluster-scoped topics, each a JetStream stream.
"""
