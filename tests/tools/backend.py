#!/usr/bin/env python3
"""A small HTTP/1.1 origin server for tern's tests and demo (stdlib only).

It speaks HTTP/1.1 with keep-alive, and its routes let a test make a backend
misbehave on purpose, byte by byte:

  GET  /                 "<name>\\n" with X-Backend: <name>
  ANY  /echo             the request body back (Content-Length), headers in X-Seen-*
  GET  /headers          the request head as received, as the body
  GET  /status/<n>       an empty response with that status
  GET  /chunked          a chunked response of three chunks
  GET  /slow?ms=N        answers after N ms
  GET  /close            a body delimited by closing the connection
  GET  /die              half of a Content-Length body, then the connection drops
  GET  /hang             never answers
  GET  /big?n=N          N bytes of body
  GET  /conn             the number of this connection (keep-alive reuse shows)
  GET  /ws               WebSocket upgrade; then echoes text frames
  GET  /healthz          200 "ok" (or 500 when started with --unhealthy), or as set by:
  GET  /healthz/ok       /healthz answers 200 "ok" from now on
  GET  /healthz/fail     /healthz answers 500 "sick"
  GET  /healthz/hang     /healthz never answers
  GET  /healthz/body     /healthz answers 200 "nope" (a body check fails)
  GET  /fail/on          every other path answers 500 (passive health tests)
  GET  /fail/off         back to normal

Usage: backend.py --port N [--name NAME] [--host 127.0.0.1] [--log FILE]
It prints "ready <port>" on stdout once it listens.
"""
import argparse
import asyncio
import base64
import hashlib
import itertools
import sys

conn_ids = itertools.count(1)
# What the test switched at runtime (/healthz/*, /fail/*).
state = {"healthz": "ok", "fail": False}


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return method, target, version, headers, head


def hget(headers, name):
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


async def read_body(reader, headers):
    te = hget(headers, "transfer-encoding")
    if te and te.lower() == "chunked":
        body = b""
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    n = int(hget(headers, "content-length") or 0)
    return await reader.readexactly(n) if n else b""


def response(status, body=b"", extra=(), reason="OK"):
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
    for k, v in extra:
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


async def websocket(reader, writer, headers):
    key = hget(headers, "sec-websocket-key") or ""
    accept = base64.b64encode(
        hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    while True:
        hdr = await reader.readexactly(2)
        opcode, ln = hdr[0] & 0x0F, hdr[1] & 0x7F
        masked = hdr[1] & 0x80
        if ln == 126:
            ln = int.from_bytes(await reader.readexactly(2), "big")
        elif ln == 127:
            ln = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if masked else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(ln)))
        if opcode == 8:
            writer.write(b"\x88\x00")
            await writer.drain()
            return
        out = bytes([0x80 | opcode])
        out += bytes([len(data)]) if len(data) < 126 else bytes([126]) + len(data).to_bytes(2, "big")
        writer.write(out + data)
        await writer.drain()


async def handle(reader, writer, args):
    cid = next(conn_ids)
    try:
        while True:
            try:
                method, target, version, headers, raw = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                return
            path, _, query = target.partition("?")
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            body = await read_body(reader, headers)
            if args.log:
                # One line per request that reached the application, so a
                # test can assert that a refused request never got here.
                with open(args.log, "a") as f:
                    f.write(f"{method} {target} {len(body)}\n")
            # It closes after an HTTP/1.0 request too, and says so (RFC 9112
            # 9.6): a close it did not announce would race tern's reuse.
            close = (hget(headers, "connection") or "").lower() == "close" or version == "HTTP/1.0"
            extra = [("X-Backend", args.name)] + ([("Connection", "close")] if close else [])
            if path == "/echo":
                for k, v in headers:
                    if k.lower().startswith("x-"):
                        extra.append(("X-Seen-" + k, v))
                writer.write(response(200, body, extra))
            elif path == "/headers":
                writer.write(response(200, raw, extra))
            elif path.startswith("/status/"):
                writer.write(response(int(path[8:]), b"", extra, reason="Status"))
            elif path == "/chunked":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: "
                    + args.name.encode()
                    + b"\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n"
                )
            elif path == "/slow":
                await asyncio.sleep(int(params.get("ms", "1000")) / 1000)
                writer.write(response(200, b"slow\n", extra))
            elif path == "/close":
                writer.write(b"HTTP/1.1 200 OK\r\nX-Backend: " + args.name.encode() + b"\r\n\r\n")
                writer.write(b"until-close\n" * 10)
                await writer.drain()
                writer.close()
                return
            elif path == "/die":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)
                await writer.drain()
                writer.transport.abort()
                return
            elif path == "/hang":
                await asyncio.sleep(3600)
            elif path == "/big":
                writer.write(response(200, b"b" * int(params.get("n", "1000000")), extra))
            elif path == "/conn":
                writer.write(response(200, str(cid).encode(), extra))
            elif path == "/ws" and (hget(headers, "upgrade") or "").lower() == "websocket":
                await websocket(reader, writer, headers)
                return
            elif path in ("/healthz/ok", "/healthz/fail", "/healthz/hang", "/healthz/body"):
                state["healthz"] = path[9:]
                writer.write(response(200, b"set\n", extra))
            elif path == "/healthz":
                mode = state["healthz"]
                if mode == "hang":
                    await asyncio.sleep(3600)
                elif mode == "fail":
                    writer.write(response(500, b"sick\n", extra))
                elif mode == "body":
                    writer.write(response(200, b"nope\n", extra))
                else:
                    writer.write(response(200, b"ok\n", extra))
            elif path in ("/fail/on", "/fail/off"):
                state["fail"] = path == "/fail/on"
                writer.write(response(200, b"set\n", extra))
            elif state["fail"]:
                writer.write(response(500, b"failing\n", extra, reason="Internal Server Error"))
            else:
                if method == "HEAD":
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(args.name) + 1}\r\n"
                    head += "".join(f"{k}: {v}\r\n" for k, v in extra)
                    writer.write((head + "\r\n").encode())
                else:
                    writer.write(response(200, (args.name + "\n").encode(), extra))
            await writer.drain()
            if close:
                writer.close()
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="backend")
    ap.add_argument("--unhealthy", action="store_true")
    ap.add_argument("--log", help="append a line per request to this file")
    args = ap.parse_args()
    if args.unhealthy:
        state["healthz"] = "fail"
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args), args.host, args.port, reuse_address=True, backlog=1024
    )
    print(f"ready {args.port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
