"""A client process that writes until it is killed: ``python -m tests.client._writer URL
DB TOKEN_FILE``. It prints each index once its write has returned (so is durably queued)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from topgun.client import SQLiteStorage, TopGunClient


async def main(url: str, database: str, token_file: str) -> None:
    token = Path(token_file).read_text()
    client = TopGunClient(url, SQLiteStorage(database), token_provider=lambda: token)
    await client.start()
    values = client.get_map("values")
    log = client.get_or_map("log")
    index = 0
    while True:
        values.set(f"k{index}", index)
        log.add("entries", index)
        print(index, flush=True)
        index += 1
        await asyncio.sleep(0)  # let the client send while the writes go on


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
