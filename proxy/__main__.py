"""``python -m proxy --prefill URL --decode URL [--kv-connector example|nixl|p2pnccl]``: serve the proxy.

Repeat ``--prefill`` / ``--decode`` (or give comma-separated URLs) for several instances of a role (xPyD),
served round-robin. ``p2pnccl`` also needs each instance's KV ZMQ address: ``URL=HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from hypercorn.asyncio import serve
from hypercorn.config import Config

from proxy.app import ProxySettings, create_app
from proxy.connectors import CONNECTORS, Instance


def parse_instances(values: list[str], connector: str) -> tuple[Instance, ...]:
    """``URL`` or ``URL=HOST:PORT`` items, repeated or comma-separated."""
    instances = []
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            url, _, kv_address = item.partition("=")
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{item!r}: an instance is an http:// URL, e.g. http://127.0.0.1:8100")
            if connector == "p2pnccl" and not kv_address:
                raise ValueError(f"{item!r}: p2pnccl needs the instance's KV ZMQ address as URL=HOST:PORT")
            instances.append(Instance(url.rstrip("/"), kv_address or None))
    return tuple(instances)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m proxy", description=__doc__)
    parser.add_argument("--prefill", action="append", required=True, help="prefill instance URL (repeatable)")
    parser.add_argument("--decode", action="append", required=True, help="decode instance URL (repeatable)")
    parser.add_argument("--kv-connector", choices=CONNECTORS, default="example")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=600.0,
        help="longest wait from a request to decode's first bytes (prefill included), then between decode's bytes",
    )
    parser.add_argument("--connect-timeout-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        settings = ProxySettings(
            prefill=parse_instances(args.prefill, args.kv_connector),
            decode=parse_instances(args.decode, args.kv_connector),
            connector=args.kv_connector,
            timeout_s=args.timeout_s,
            connect_timeout_s=args.connect_timeout_s,
        )
    except ValueError as error:
        parser.error(str(error))
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    asyncio.run(_serve(create_app(settings), config))


async def _serve(app: object, config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (open streams are closed, upstream requests too)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
