"""A small asyncio HTTP/1.1 load generator (keep-alive connections), shared by the HTTP benchmarks.

Python's thread-based clients spend more CPU than the server on a 2-core machine; raw asyncio
streams keep the generator's own cost low, so the figures describe the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    name: str
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    connections: int = 1
    error_samples: dict[int, str] = field(default_factory=dict)  # the first body of each error status

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "requests": self.requests,
            "errors": self.errors,
            "statuses": self.statuses,
            "seconds": round(self.seconds, 2),
            "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "error_samples": self.error_samples,
        }


# A request factory returns (method, path, headers, body or None) for connection i, request n.
RequestFactory = Callable[[int, int], tuple[str, str, dict[str, str], bytes | None]]
# Told each answer: connection i, request n, HTTP status (0 when the server closed the connection).
ResponseHandler = Callable[[int, int, int], None]


async def _connection(
    host: str, port: int, index: int, make_request: RequestFactory, deadline: float, max_requests: int | None,
    result: LoadResult, interval: float | None = None, on_response: ResponseHandler | None = None, stagger: bool = True,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    began = time.perf_counter() + ((interval or 0.0) * index / max(1, result.connections) if stagger else 0.0)
    try:
        while time.perf_counter() < deadline and (max_requests is None or n < max_requests):
            if interval is not None:  # open loop: request n of this connection is due at began + n * interval
                delay = began + n * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            method, path, headers, body = make_request(index, n)
            lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            if body is not None:
                lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
            payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
            started = time.perf_counter()
            writer.write(payload)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:  # the server closed the connection: reconnect
                writer.close()
                if on_response is not None:
                    on_response(index, n, 0)
                reader, writer = await asyncio.open_connection(host, port)
                result.errors += 1
                continue
            status = int(status_line.split()[1])
            length, close = 0, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            response_body = await reader.readexactly(length)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.requests += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status >= 400:
                result.errors += 1
                result.error_samples.setdefault(status, response_body[:300].decode(errors="replace"))
            if on_response is not None:
                on_response(index, n, status)
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            n += 1
    finally:
        writer.close()


async def run_load(
    name: str, host: str, port: int, make_request: RequestFactory, connections: int, seconds: float,
    max_requests_per_connection: int | None = None, rate: float | None = None,
    on_response: ResponseHandler | None = None, stagger: bool = True,
) -> LoadResult:
    """Closed loop (each connection sends as fast as answers come), or open loop at ``rate``
    requests per second in total, spread evenly over the connections (``stagger=False``: every
    connection sends its request n at the same instant). ``on_response`` is told every answer."""
    result = LoadResult(name, connections=connections)
    interval = connections / rate if rate else None
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _connection(host, port, i, make_request, deadline, max_requests_per_connection, result, interval,
                        on_response, stagger)
            for i in range(connections)
        )
    )
    result.seconds = time.perf_counter() - started
    return result


def json_body(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
