"""The client side of `kleenenet --host`: the command line's requests to a daemon.

Plain requests go through the standard library's http.client (on a unix socket or TCP), so a
command that sends them starts about as fast as the command line itself; only `run` and `exec`,
which follow a WebSocket, load aiohttp.
"""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote, urlsplit

from kleenenet.errors import InvalidInput, KleenenetError
from kleenenet.vocabulary import HOST_IMAGE, check_run

TIMEOUT = 120.0  # seconds a request may take (a stop waits up to 10 s for the container)


class NotStarted(KleenenetError):
    """/exec/start refused to start the container or command."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client's connection, to a unix socket."""

    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def parse_host(url: str) -> tuple[str | None, str, int]:
    """(socket path, TCP host, TCP port) of `unix:///PATH`, `http:///PATH` (no host: a unix socket,
    as klee writes it), or `http://HOST:PORT` / `tcp://HOST:PORT`; the path is None for TCP."""
    parts = urlsplit(url)
    if parts.scheme == "unix" and (parts.netloc or parts.path) and not (parts.query or parts.fragment):
        return parts.netloc + parts.path, "", 0
    if parts.scheme in ("http", "tcp") and not (parts.query or parts.fragment):
        if not parts.netloc and parts.path:
            return parts.path, "", 0
        try:
            if parts.hostname and parts.path in ("", "/"):
                return None, parts.hostname, parts.port or 80
        except ValueError:  # a port that is not a number
            pass
    raise KleenenetError(f"invalid --host {url!r}: give unix:///PATH, http:///PATH or http://HOST:PORT")


def path_of(*parts: str) -> str:
    """A request path with names and ids quoted as path segments."""
    return "".join(f"/{quote(p, safe='')}" for p in parts)


class Remote:
    """A daemon at `url`. Its errors become KleenenetError with the daemon's message."""

    def __init__(self, url: str):
        self.url = url
        self.socket_path, self.tcp_host, self.tcp_port = parse_host(url)
        self._conn = (UnixHTTPConnection(self.socket_path, TIMEOUT) if self.socket_path is not None
                      else http.client.HTTPConnection(self.tcp_host, self.tcp_port, timeout=TIMEOUT))

    def unreachable(self, e: OSError) -> KleenenetError:
        reason = e.strerror or str(e) or type(e).__name__
        return KleenenetError(f"cannot reach the daemon at {self.url}: {reason}")

    def call(self, method: str, path: str, body=None):
        """The answer's JSON (None for an empty one); an error status raises the daemon's message."""
        conn = self._conn
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            reused = conn.sock is not None
            try:
                conn.request(method, path, data, headers)
                answer = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not reused:
                    raise
                # The daemon closed the kept-alive connection (as the request arrived: a reset):
                # again on a new one.
                conn.close()
                conn.request(method, path, data, headers)
                answer = conn.getresponse()
            status, reason, raw = answer.status, answer.reason, answer.read()
        except TimeoutError:
            conn.close()
            raise KleenenetError(f"the daemon at {self.url} did not answer within {TIMEOUT:.0f} s") from None
        except OSError as e:
            conn.close()
            raise self.unreachable(e) from None
        except http.client.HTTPException as e:
            conn.close()
            raise KleenenetError(f"invalid answer from {self.url} to {method} {path}: {e!r}") from None
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        if status >= 400:
            message = answer.get("message") if isinstance(answer, dict) else None
            raise KleenenetError(str(message) if message else f"{self.url} answered {status} {reason} "
                                 f"to {method} {path}")
        if raw and answer is None:
            raise KleenenetError(f"invalid answer from {self.url} to {method} {path}: not JSON")
        return answer

    def close(self) -> None:
        self._conn.close()

    # containers

    def run(self, cmd: list[str], name: str | None, driver: str | None, networks: tuple[tuple[str, str, str], ...],
            public_ports: list[dict], dns: list[str], detach: bool, remove: bool, jail_params: tuple[str, ...],
            image: str | None, out, network_options: list[str] = ()) -> tuple[str, int | None]:
        """`run` as klee does it: create, connect to each network, start through an exec instance
        and follow the output. The container's id and its command's exit code (None when detached).
        A container that does not start is removed again, as a direct `run` leaves nothing."""
        driver = check_run(cmd, networks, driver)
        cid = self.call("POST", "/containers/create", {
            "name": name, "image": HOST_IMAGE if image is None else image, "cmd": list(cmd),
            "network_driver": driver, "jail_param": list(jail_params), "auto_remove": remove,
            "public_ports": public_ports, "dns": dns, "network_options": list(network_options)})["id"]
        try:
            for network, ip, ip6 in networks:
                self.call("POST", "/networks/connect", {"container": cid, "network": network,
                                                        "ip_address": ip, "ip_address6": ip6})
            exec_id = self.call("POST", "/exec/create", {"container_id": cid})["id"]
        except BaseException:
            self._discard(cid)
            raise
        try:
            return cid, self.exec_start(exec_id, attach=not detach, start_container=True, out=out)
        except NotStarted:
            self._discard(cid)
            raise

    def _discard(self, container_id: str) -> None:
        try:
            self.call("DELETE", path_of("containers", container_id))
        except KleenenetError:
            pass

    def exec(self, container: str, cmd: list[str], out) -> int | None:
        """Run `cmd` in a running container; its exit code."""
        if not cmd:
            raise InvalidInput("no command given: kleenenet exec CONTAINER -- CMD [ARGS...]")
        exec_id = self.call("POST", "/exec/create", {"container_id": container, "cmd": list(cmd)})["id"]
        return self.exec_start(exec_id, attach=True, start_container=False, out=out)

    # WebSocket: /exec/start

    def exec_start(self, exec_id: str, attach: bool, start_container: bool, out) -> int | None:
        """Start an exec instance and follow it; `out(text)` gets the output. The exit code of the
        command (None when started detached, or when the daemon does not know it)."""
        import asyncio

        return asyncio.run(self._exec_start(exec_id, attach, start_container, out))

    async def _exec_start(self, exec_id: str, attach: bool, start_container: bool, out) -> int | None:
        import aiohttp

        if self.socket_path is not None:
            connector, url = aiohttp.UnixConnector(path=self.socket_path), "http://localhost/exec/start"
        else:
            connector, url = None, f"http://{self.tcp_host}:{self.tcp_port}/exec/start"
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                ws = await session.ws_connect(url, max_msg_size=0)
            except aiohttp.WSServerHandshakeError as e:
                raise KleenenetError(f"{self.url} refused the WebSocket /exec/start: {e.status} {e.message}") from None
            except aiohttp.ClientConnectorError as e:
                raise self.unreachable(e.os_error) from None
            except (OSError, aiohttp.ClientError) as e:
                raise KleenenetError(f"cannot reach the daemon at {self.url}: {e}") from None
            async with ws:
                await ws.send_json({"exec_id": exec_id, "attach": attach, "start_container": start_container})
                started = False  # the daemon said `starting`: the command runs
                while True:
                    msg = await ws.receive()
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        text = msg.data if isinstance(msg.data, str) else msg.data.decode(errors="replace")
                        if not started and _kleene_message(text).get("msg_type") == "starting":
                            started = True
                        else:
                            out(text)
                    elif msg.type == aiohttp.WSMsgType.CLOSE:
                        return _closed(msg.data, msg.extra, attach, started)
                    else:
                        raise KleenenetError(f"the daemon at {self.url} closed the connection before the "
                                             "command ended")


def _kleene_message(text: str) -> dict:
    try:
        message = json.loads(text)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _closed(code: int, reason: str | None, attach: bool, started: bool) -> int | None:
    """What the close frame of /exec/start says: Kleene's 1000 (exited, with the exit code in the
    message) or 1001 (started detached); 1002 and 1011 are errors."""
    message = str(_kleene_message(reason or "").get("message") or reason or "")
    message = message or f"the daemon closed the connection (code {code})"
    if code == 1000 and attach:
        word = message.rpartition("exit-code ")[2]
        return int(word) if word.lstrip("-").isdigit() else None
    if code == 1001 and not attach:
        return None
    if code in (1002, 1011) and not started:
        raise NotStarted(message)
    raise KleenenetError(message)
