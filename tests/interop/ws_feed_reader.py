#!/usr/bin/env python3
"""A slow reader of a compressed WebSocket feed, for tests/compression.rs.

usage: ws_feed_reader.py URL [--pause SECONDS]

Connects with permessage-deflate and a small receive buffer, reads nothing for the pause
(default 2 s) so that the server's queue fills up and it refuses writes, then reads on.
Every text message must be exactly feed_message(seq) for a seq above the previous one (the
server drops messages, never alters them), until the server's closing message
{"end":true,"accepted":N}, where N must be the number of feed messages received.

Prints "OK <received> <last seq>" and exits 0, or exits non-zero with the reason.
"""
import asyncio
import json
import socket
import sys
from urllib.parse import urlparse

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]


def feed_message(seq):
    """The same text as feed_message in tests/compression.rs."""
    words = [WORDS[(seq * 7 + k * 3) % 7] for k in range(seq % 11 + 5)]
    token = ((seq * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 8
    return '{"seq":%d,"user":"user-%d","room":"lobby","token":"%014x","text":"%s","body":"%s"}' % (
        seq,
        seq % 97,
        token,
        " ".join(words),
        "/".join(words) * 4,
    )


async def run(url, pause):
    parsed = urlparse(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connecting, so the window the kernel advertises is small from the start.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((parsed.hostname, parsed.port))
    sock.setblocking(False)
    async with connect(
        url,
        sock=sock,
        compression="deflate",
        max_queue=4,
        max_size=2**20,
        open_timeout=10,
        close_timeout=5,
    ) as ws:
        extensions = ws.response.headers.get_all("Sec-WebSocket-Extensions")
        if not any("permessage-deflate" in e for e in extensions):
            raise SystemExit(f"permessage-deflate was not negotiated: {extensions}")
        await asyncio.sleep(pause)
        received = 0
        last = -1
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), 30)
            except ConnectionClosed as e:
                raise SystemExit(
                    f"closed after {received} messages (last seq {last}): {e!r}"
                )
            if not isinstance(message, str):
                raise SystemExit(f"binary message after seq {last}")
            if message.startswith('{"end"'):
                end = json.loads(message)
                if end["accepted"] != received:
                    raise SystemExit(
                        f"the server queued {end['accepted']} messages, {received} arrived"
                    )
                break
            try:
                seq = json.loads(message)["seq"]
            except (ValueError, KeyError, TypeError):
                raise SystemExit(
                    f"message {received} (after seq {last}) is not the JSON sent: {message[:200]!r}"
                )
            if not isinstance(seq, int) or seq <= last or message != feed_message(seq):
                raise SystemExit(
                    f"message {received} (after seq {last}) differs from what was sent: {message[:200]!r}"
                )
            last = seq
            received += 1
        await ws.close(1000, "done")
    print("OK", received, last, flush=True)


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    pause = float(argv[argv.index("--pause") + 1]) if "--pause" in argv else 2.0
    asyncio.run(run(argv[1], pause))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
