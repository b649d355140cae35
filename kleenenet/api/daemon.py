"""`kleenenet daemon`: serve the API on a unix socket (and, if asked, on a loopback TCP port)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

from kleenenet.api.app import Backend, make_app
from kleenenet.errors import InvalidInput, KleenenetError


def default_socket() -> str:
    return "/var/run/kleened.sock" if os.uname().sysname == "FreeBSD" else "/run/kleenenet.sock"


def parse_listen(value: str) -> tuple[str, int]:
    """127.0.0.1:PORT or [::1]:PORT: the API has no authentication, so only loopback."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        if not ipaddress.ip_address(host).is_loopback or not 0 < int(port) < 65536:
            raise ValueError
    except ValueError:
        raise InvalidInput(f"invalid --listen {value!r}: give a loopback address and port, "
                           "e.g. 127.0.0.1:8085") from None
    return host, int(port)


def _claim_socket(path: Path) -> None:
    """Remove a socket left by a daemon that is gone; refuse one a daemon still serves."""
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise KleenenetError(f"a daemon already serves {path}")


async def serve(make_service, socket_path: str, listen: str | None = None, ready=None) -> None:
    tcp = parse_listen(listen) if listen else None
    path = Path(socket_path)
    _claim_socket(path)
    back = Backend(make_service)
    try:
        await back.call("reconcile")
    except KleenenetError as e:  # e.g. a LAN interface missing: reported, and the API still served
        print(f"kleenenet: reconcile: {e}", file=sys.stderr, flush=True)
    runner = web.AppRunner(make_app(back), handle_signals=False, access_log=None, shutdown_timeout=5)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        umask = os.umask(0o177)  # the socket is 0600 from the moment it exists
        try:
            await web.UnixSite(runner, str(path)).start()
        finally:
            os.umask(umask)
        if tcp:
            await web.TCPSite(runner, *tcp).start()
        if ready:
            ready()
        await stop.wait()
    finally:
        # Running containers are left alone: a daemon started again takes them over.
        await runner.cleanup()
        back.shutdown()
        path.unlink(missing_ok=True)
