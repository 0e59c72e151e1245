#!/usr/bin/env python3
"""A TCP proxy that adds a one-way delay in each direction, keeping order and
pipelining: puts Redis "further away" for bench/cluster-refresh.

    bench/redis-delay-proxy.py <listen port> <target port> <one-way delay ms>
"""
import asyncio
import sys
import time

LISTEN, TARGET, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000


async def pump(reader, writer):
    queue = asyncio.Queue()

    async def read():
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + DELAY, data))
            if not data:
                return

    async def write():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    await asyncio.gather(read(), write())


async def handle(reader, writer):
    try:
        target_reader, target_writer = await asyncio.open_connection("127.0.0.1", TARGET)
        await asyncio.gather(pump(reader, target_writer), pump(target_reader, writer))
    except OSError:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
