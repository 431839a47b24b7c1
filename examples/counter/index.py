"""The counter from the si user guide: `si seq start - 3000 10` prints 3000 ... 3009.

Arguments from the command line arrive as strings; `delay` (seconds between numbers) lets the
README's demo stream visibly instead of finishing at once.
"""

import asyncio


async def run(context, input, initial=0, length=1000, delay=0):
    start, count, pause = int(initial), int(length), float(delay)
    for number in range(start, start + count):
        yield number
        if pause:
            await asyncio.sleep(pause)
