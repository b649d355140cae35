"""/exec: Kleene's exec instances. `exec/create` records what to run; `exec/start` is a WebSocket
whose first frame says how to start it: the container itself (no command), or a command inside the
running container. Frames and close codes are Kleene's: a `starting` message, the output as text
frames, then close 1000 (exited), 1001 (started detached), 1002 (bad start config) or 1011 (error),
the reason a JSON message.

A container's output goes to its log file and is followed from there, so it never depends on a
client or on the daemon: a client that goes away leaves the container running (removed whole if
it was started with --rm); the daemon can stop and start again under running containers."""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import signal
import threading
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from kleenenet.api.app import BACKEND, Backend, backend, json_body, kleene
from kleenenet.api.schemas import ExecConfig, ExecStartConfig
from kleenenet.errors import Conflict, HostError, KleenenetError, NotFound
from kleenenet.model import check_env, new_id

routes = web.RouteTableDef()

MAX_PENDING = 1000  # exec instances created and not started yet; the oldest are dropped
FOLLOW_INTERVAL = 0.05  # seconds between looks at a log file with nothing new
SWEEP_INTERVAL = 2.0  # seconds between looks for containers that others started and that exited
KILL_AFTER = 5.0  # seconds an exec whose client went away has after SIGTERM


@dataclass
class ExecInstance:
    container_id: str
    cmd: list[str]
    env: list[str]
    user: str
    id: str = field(default_factory=new_id)


class Supervisor:
    """The daemon's running containers and exec instances. It waits for the process of each
    container it started; when one exits, the container is taken off its networks (and removed
    with --rm). Containers someone else started (`kleenenet run -d`, an earlier daemon) are
    looked at every SWEEP_INTERVAL seconds instead."""

    def __init__(self, back: Backend):
        self.back = back
        self.pending: dict[str, ExecInstance] = {}
        self.exits: dict[str, asyncio.Task] = {}  # container id -> its exit code, once cleaned up
        self.sockets: set[web.WebSocketResponse] = set()
        self.stopping = False  # the daemon is stopping: its clients go, its containers stay

    def watch(self, container_id: str, pid: int, proc) -> asyncio.Task:
        loop = asyncio.get_running_loop()
        exited = loop.create_future()

        def wait():  # a thread of its own: a container may run for months
            try:
                code = proc.wait()
            except ChildProcessError:  # reaped by a stop meanwhile
                code = None
            loop.call_soon_threadsafe(exited.set_result, code)
        threading.Thread(target=wait, name=f"wait-{container_id}", daemon=True).start()

        async def cleanup():
            code = await exited
            try:
                await self.back.call("exited", container_id, pid)
            finally:
                self.exits.pop(container_id, None)
            return code
        task = self.exits[container_id] = asyncio.create_task(cleanup())
        return task

    async def start(self, container_id: str, cmd: list[str] | None = None):
        """Start a container; its running state and the task that ends with its exit code."""
        c, proc = await self.back.call("start", container_id, cmd)
        return c, self.watch(c.id, c.pid, proc)

    async def sweep(self) -> None:
        def exited_elsewhere(svc, watched):
            for c in svc.store.containers():
                if c.running and c.id not in watched and not svc.platform.alive(c):
                    svc.exited(c.id, c.pid)
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                await self.back.run(exited_elsewhere, set(self.exits))
            except KleenenetError:
                pass  # busy state: next time

    async def start_on_startup(self) -> None:
        """Kleene's restart policy `on-startup`: such containers start with the daemon."""
        containers = await self.back.read(lambda svc: svc.containers())
        for c in containers:
            if c.restart_policy == "on-startup" and not c.running:
                try:
                    await self.start(c.id)
                except KleenenetError:
                    pass  # shown as stopped; `klee start` tells why

    async def close_sockets(self) -> None:
        self.stopping = True
        for ws in list(self.sockets):
            await ws.close(code=1001, message=closing("kleenenet is stopping; the container keeps running"))


SUPERVISOR = web.AppKey("supervisor", Supervisor)


def setup(app: web.Application) -> None:
    async def lifetime(app):
        supervisor = app[SUPERVISOR] = Supervisor(app[BACKEND])
        await supervisor.start_on_startup()
        sweeper = asyncio.create_task(supervisor.sweep())
        yield
        sweeper.cancel()

    async def shutdown(app):  # before aiohttp cancels the handlers: their clients get a reason
        await app[SUPERVISOR].close_sockets()
    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(shutdown)


def _message(msg_type: str, message: str) -> str:
    """A Kleene WebSocket message, short enough for a close frame's reason (123 bytes)."""
    text = json.dumps({"msg_type": msg_type, "message": message, "data": ""})
    while len(text.encode()) > 123:
        message = message[:-4] + "..."
        text = json.dumps({"msg_type": msg_type, "message": message, "data": ""})
    return text


def closing(message: str) -> str:
    return _message("closing", message)


def error_message(message: str) -> str:
    return _message("error", message)


@routes.post("/exec/create")
@kleene(404)
async def create(request: web.Request):
    config = ExecConfig.parse(await json_body(request))
    check_env(config.env)
    c = await backend(request).read(lambda svc, ident: svc.store.container(ident), config.container_id)
    pending = request.app[SUPERVISOR].pending
    while len(pending) >= MAX_PENDING:
        pending.pop(next(iter(pending)))
    inst = ExecInstance(c.id, config.cmd, config.env, config.user)
    pending[inst.id] = inst
    return web.json_response({"id": inst.id}, status=201)


@routes.get("/exec/start")
async def start(request: web.Request):
    ws = web.WebSocketResponse(max_msg_size=64 * 1024)
    await ws.prepare(request)
    supervisor = request.app[SUPERVISOR]
    supervisor.sockets.add(ws)
    try:
        await _start(ws, supervisor)
    finally:
        supervisor.sockets.discard(ws)
    return ws


async def _start(ws: web.WebSocketResponse, supervisor: Supervisor) -> None:
    try:
        first = await ws.receive(timeout=60)
    except asyncio.TimeoutError:
        return await ws.close(code=1002, message=error_message("no exec start config within 60 s"))
    if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return
    try:
        config = ExecStartConfig.parse(json.loads(first.data))
    except (ValueError, KleenenetError) as e:
        return await ws.close(code=1002, message=error_message(f"invalid exec start config: {e}"))
    inst = supervisor.pending.pop(config.exec_id, None)
    if inst is None:
        return await ws.close(code=1002, message=error_message(f"no such exec instance {config.exec_id!r}"))
    try:
        running = await supervisor.back.read(lambda svc, i: svc.is_running(i), inst.container_id)
        if inst.cmd and running:
            await _exec(ws, supervisor, inst, config.attach)
        else:
            if not config.start_container:
                raise Conflict("the container is not running and start_container is false")
            await _start_container(ws, supervisor, inst, config.attach)
    except KleenenetError as e:
        await ws.close(code=1011, message=error_message(str(e)))


async def _start_container(ws, supervisor: Supervisor, inst: ExecInstance, attach: bool) -> None:
    log = await supervisor.back.read(lambda svc: svc.log_path(inst.container_id))
    offset = log.stat().st_size if log.exists() else 0
    c, exit_code = await supervisor.start(inst.container_id, inst.cmd or None)
    if not attach:
        return await ws.close(code=1001, message=closing("started the container in detached mode"))
    await ws.send_str(_message("starting", ""))
    client_gone = asyncio.create_task(_until_closed(ws))
    try:
        with open(log, "rb") as output:
            output.seek(offset)
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            while not client_gone.done():
                text = decoder.decode(output.read(65536))
                if text:
                    await ws.send_str(text)
                    continue
                if exit_code.done():
                    text = decoder.decode(output.read(), final=True)
                    if text:
                        await ws.send_str(text)
                    code = await asyncio.shield(exit_code)
                    return await ws.close(
                        code=1000, message=closing(f"executable {inst.id} and its container exited with exit-code {code}"))
                await asyncio.wait([exit_code, client_gone], timeout=FOLLOW_INTERVAL,
                                   return_when=asyncio.FIRST_COMPLETED)
    except ConnectionError:
        pass  # the client went away while we were writing
    except NotFound:
        return  # the container was removed meanwhile
    finally:
        client_gone.cancel()
    # The client went away. A --rm container goes with it, removed whole; any other keeps running,
    # as with -d. A stopping daemon leaves every container running: the next one takes them over.
    if c.auto_remove and not supervisor.stopping:
        await supervisor.back.call("remove", c.id, force=True)


async def _exec(ws, supervisor: Supervisor, inst: ExecInstance, attach: bool) -> None:
    def prepare(svc):  # the environment first: the descriptors are opened last, and passed on at once
        env = svc.exec_environ(inst.container_id, inst.env)
        return env, svc.log_path(inst.container_id), *svc.exec_command(inst.container_id, inst.cmd, inst.user)
    env, path, argv, fds = await supervisor.back.read(prepare)
    log = None
    try:
        if not attach:  # a detached exec writes where its container does
            path.parent.mkdir(exist_ok=True)
            log = open(path, "ab")
        proc = await asyncio.create_subprocess_exec(
            *argv, pass_fds=fds, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            stdout=log or asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        raise HostError(f"cannot run {argv[0]}: {e.strerror}") from None
    finally:
        for fd in fds:
            os.close(fd)
        if log:
            log.close()
    if not attach:
        return await ws.close(code=1001, message=closing("started the exec instance in detached mode"))
    await ws.send_str(_message("starting", ""))

    async def relay():
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while chunk := await proc.stdout.read(65536):
            await ws.send_str(decoder.decode(chunk))
        return await proc.wait()
    relaying = asyncio.create_task(relay())
    client_gone = asyncio.create_task(_until_closed(ws))
    try:
        await asyncio.wait([relaying, client_gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        client_gone.cancel()
        if not relaying.done():  # the client went away (or the daemon is stopping)
            relaying.cancel()
            await _end(proc)
    if relaying.cancelled():
        return
    try:
        code = relaying.result()
    except ConnectionError:  # the client went away while we were writing
        return await _end(proc)
    await ws.close(code=1000, message=closing(f"{inst.id} has exited with exit-code {code}"))


async def _end(proc) -> None:
    """An exec whose client went away: its whole session goes too, so nothing is left behind."""
    for signum, wait in ((signal.SIGTERM, KILL_AFTER), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(proc.wait(), wait)
            return
        except asyncio.TimeoutError:
            continue


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Reads (and ignores) what the client sends, until it closes the connection."""
    async for _ in ws:
        pass
