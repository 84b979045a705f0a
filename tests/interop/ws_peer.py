#!/usr/bin/env python3
"""A WebSocket peer built on the Python `websockets` package, for interop tests.

usage:
  ws_peer.py client URL [--compress] [--ca PEM]
                                       send a fixed set of messages, check every echo
                                       (a wss:// URL is verified against the CA in PEM)
  ws_peer.py server [--compress]       echo server on 127.0.0.1; prints "PORT <n>", then
                                       serves until stdin is closed (at most 120 s)

The client prints one line "OK <messages> <extensions>" and exits 0 when every echo came back
equal and of the same kind; with --compress it also requires permessage-deflate to have
been negotiated. Any failure exits non-zero with the reason on stderr.
"""
import asyncio
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


def messages():
    """Text and binary, empty to 200 KB, compressible and not."""
    out = ["", "hello", "héllo wörld ✓", "json " * 10_000]
    out += [bytes(range(256)) * 4, b"\x00" * 100_000, bytes((i * 7919) % 251 for i in range(200_000))]
    out += ['{"id": %d, "name": "user-%d", "tags": ["a", "b"]}' % (i, i) for i in range(50)]
    return out


async def run_client(url, compress, ca):
    extensions = []
    tls = ssl.create_default_context(cafile=ca) if url.startswith("wss:") else None
    async with connect(
        url,
        ssl=tls,
        compression="deflate" if compress else None,
        max_size=2**22,
        open_timeout=10,
        close_timeout=10,
    ) as ws:
        extensions = ws.response.headers.get_all("Sec-WebSocket-Extensions")
        if compress and not any("permessage-deflate" in e for e in extensions):
            raise SystemExit(f"permessage-deflate was not negotiated: {extensions}")
        if not compress and extensions:
            raise SystemExit(f"unexpected extensions: {extensions}")
        sent = messages()
        for message in sent:
            await ws.send(message)
        for i, expected in enumerate(sent):
            got = await asyncio.wait_for(ws.recv(), 20)
            if type(got) is not type(expected) or got != expected:
                raise SystemExit(f"echo {i} differs: {type(got).__name__} of {len(got)}")
        await ws.close(1000, "done")
        if ws.close_code != 1000:
            raise SystemExit(f"closed with {ws.close_code}")
    print("OK", len(sent), ";".join(extensions) or "-", flush=True)


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def run_server(compress):
    async with serve(
        echo,
        "127.0.0.1",
        0,
        compression="deflate" if compress else None,
        max_size=2**22,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print("PORT", port, flush=True)
        loop = asyncio.get_running_loop()
        stdin_closed = loop.run_in_executor(None, sys.stdin.read)
        await asyncio.wait_for(stdin_closed, 120)


def main(argv):
    if len(argv) < 2 or argv[1] not in ("client", "server"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    compress = "--compress" in argv
    ca = argv[argv.index("--ca") + 1] if "--ca" in argv else None
    if argv[1] == "client":
        asyncio.run(run_client(argv[2], compress, ca))
    else:
        asyncio.run(run_server(compress))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
