"""Topic throughput: one HTTP producer to one and to four HTTP consumers.

    python bench/topics.py [--messages 200000] [--size 100]

Prints messages/s and MB/s for each case (time from the first byte sent to the last byte
received by the slowest consumer).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from si.client import HubClient
from si.testing import running_hub


def run_case(
    address: str, topic: str, messages: int, size: int, consumers: int
) -> dict[str, object]:
    line = b"x" * (size - 1) + b"\n"
    total = messages * size
    done = [0.0] * consumers
    ready = threading.Barrier(consumers + 1)

    def consume(index: int) -> None:
        client = HubClient(address)
        received = 0
        stream = client.topic_stream(topic, "text/plain")
        ready.wait()
        for chunk in stream:
            received += len(chunk)
            if received >= total:
                break
        done[index] = time.perf_counter()

    threads = [threading.Thread(target=consume, args=(n,), daemon=True) for n in range(consumers)]
    for thread in threads:
        thread.start()
    ready.wait()
    time.sleep(0.2)  # the consumers' requests are in
    block = line * 1000
    started = time.perf_counter()
    HubClient(address).send_topic(topic, iter([block] * (messages // 1000)), "text/plain")
    for thread in threads:
        thread.join(120)
    elapsed = max(done) - started
    return {
        "consumers": consumers,
        "messages": messages,
        "message_bytes": size,
        "messages_per_s": round(messages / elapsed),
        "mb_per_s": round(total / elapsed / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="si-bench-") as tmp,
        running_hub(Path(tmp) / "home") as hub,
    ):
        for consumers in (1, 4):
            result = run_case(
                hub.address, f"bench{consumers}", options.messages, options.size, consumers
            )
            if options.json:
                print(json.dumps(result))
            else:
                print(
                    f"topic, 1 producer -> {consumers} consumer(s): {result['messages_per_s']:,} "
                    f"messages/s, {result['mb_per_s']} MB/s "
                    f"({options.messages:,} x {options.size} B)"
                )


if __name__ == "__main__":
    main()
