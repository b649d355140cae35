"""The daemon's application: routes, errors as Kleene's `{"message"}`, and the workers that run the
service. The service is synchronous (SQLite, netlink, nft); each call runs in a worker thread with
its own store connection and platform. Reads have threads of their own: changes queue for the
state's write lock, and long host work never holds up a read."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from kleenenet.errors import InvalidInput, KleenenetError

MAX_BODY = 256 * 1024
WORKERS = 16  # changes: they take the state's write lock one at a time
READERS = 4  # reads: never queued behind changes


class Backend:
    """Runs service calls in worker threads; each thread has its own Service."""

    def __init__(self, make_service):
        self._make_service = make_service
        self._local = threading.local()
        self._changes = ThreadPoolExecutor(WORKERS, thread_name_prefix="kleenenet-change")
        self._reads = ThreadPoolExecutor(READERS, thread_name_prefix="kleenenet-read")

    def _service(self):
        svc = getattr(self._local, "service", None)
        if svc is None:
            svc = self._local.service = self._make_service()
        return svc

    async def call(self, method: str, *args, **kwargs):
        """service.<method>(*args, **kwargs), a change, in a worker."""
        def work():
            return getattr(self._service(), method)(*args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._changes, work)

    async def run(self, fn, *args):
        """fn(service, *args), a change, in a worker."""
        return await asyncio.get_running_loop().run_in_executor(self._changes, lambda: fn(self._service(), *args))

    async def read(self, fn, *args):
        """fn(service, *args), which only reads the state and the host, in a reader."""
        return await asyncio.get_running_loop().run_in_executor(self._reads, lambda: fn(self._service(), *args))

    def shutdown(self) -> None:
        for pool in (self._changes, self._reads):
            pool.shutdown(wait=True, cancel_futures=True)


BACKEND = web.AppKey("backend", Backend)


def backend(request: web.Request) -> Backend:
    return request.app[BACKEND]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"message": " ".join(message.split())}, status=status)


def kleene(*statuses: int):
    """A handler whose user errors answer with the status klee expects for this call: the error's
    own status if klee accepts it here, else the first one given (klee fails on any other)."""
    def wrap(handler):
        @functools.wraps(handler)
        async def handle(request: web.Request):
            try:
                return await handler(request)
            except KleenenetError as e:
                status = e.status if e.status in statuses or e.status >= 500 else statuses[0]
                return error(status, str(e))
        return handle
    return wrap


def ident(request: web.Request, key: str) -> str:
    """A name or id from the path: text that the state could hold."""
    value = request.match_info[key]
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"invalid {key.replace('_', ' ')} {value!r}: not UTF-8") from None
    if "\0" in value or not value:
        raise InvalidInput(f"invalid {key.replace('_', ' ')} {value!r}")
    return value


async def json_body(request: web.Request):
    too_large = InvalidInput(f"request body of {request.content_length or 'over ' + str(MAX_BODY)} bytes is "
                             f"too large (at most {MAX_BODY})")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # a chunked body that grew too large
        raise too_large from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"invalid JSON body: {e}") from None
    try:  # a "\udcff" escape decodes to a lone surrogate: no text the state can hold
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as e:
        raise InvalidInput(f"invalid JSON body: {e.object[e.start:e.end]!r} is not a Unicode character") from None
    return body


@web.middleware
async def errors_as_messages(request: web.Request, handler):
    """aiohttp's own errors (unknown path, method, a body too large) as Kleene's `{"message"}`;
    a failure of kleenenet's own is a 500 with a message too (and its traceback in the log)."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        reason = {404: f"no such path: {request.method} {request.path}",
                  405: f"method {request.method} not allowed on {request.path}",
                  413: f"request body too large (at most {MAX_BODY} bytes)"}.get(e.status, e.reason)
        return error(e.status, reason)
    except Exception as e:  # noqa: BLE001 - a bug: the client still gets Kleene's error shape
        traceback.print_exc(file=sys.stderr)
        return error(500, f"internal error in kleenenet ({type(e).__name__}: {e}); see the daemon's log")


def make_app(back: Backend) -> web.Application:
    from kleenenet.api import containers, exec, images, networks

    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors_as_messages])
    app[BACKEND] = back
    for module in (networks, containers, exec, images):
        app.add_routes(module.routes)
    exec.setup(app)
    return app
