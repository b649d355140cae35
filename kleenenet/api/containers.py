"""/containers: Kleene's container calls. Starting one is an exec (see exec.py), as in Kleene."""

from __future__ import annotations

from aiohttp import web

from kleenenet.api.app import backend, ident, json_body, kleene
from kleenenet.api.schemas import ContainerConfig
from kleenenet.errors import InvalidInput
from kleenenet.model import RESTART_POLICIES, check_choice
from kleenenet.vocabulary import USER_MODE_DRIVERS

routes = web.RouteTableDef()


@routes.post("/containers/create")
@kleene(404)
async def create(request: web.Request):
    config = ContainerConfig.parse(await json_body(request))
    if config.mounts:
        raise InvalidInput("mounts are not supported: give the container an image whose root has the files")
    c = await backend(request).call(
        "create_container", config.cmd or [], name=config.name, driver=config.network_driver, image=config.image,
        env=config.env or [], user=config.user or "", jail_param=config.jail_param or [],
        public_ports=[p.model_dump() for p in config.public_ports or []], dns=config.dns or [],
        network_options=config.network_options or [], persist=bool(config.persist), auto_remove=config.auto_remove,
        restart_policy=check_choice("restart policy", config.restart_policy or "no", RESTART_POLICIES))
    return web.json_response({"id": c.id}, status=201)


def on_the_wire(container: dict) -> dict:
    """A container as klee reads it: Kleene knows the drivers ipnet, vnet, host and disabled only
    (klee fails on any other), so a user-mode one is `vnet` (a network stack of its own) there,
    and named in kleenenet's own field `user_mode_driver`."""
    if container["network_driver"] in USER_MODE_DRIVERS:
        return {**container, "network_driver": "vnet", "user_mode_driver": container["network_driver"]}
    return container


def _summaries(svc, all_: bool) -> list[dict]:
    images = {img.id: img for img in svc.store.images()}
    out = []
    for c in svc.containers():
        if all_ or c.running:
            img = images.get(c.image_id)
            out.append(on_the_wire({**svc.kleene_container(c), "image_name": img.name if img else "",
                                    "image_tag": img.tag if img else "", "jid": None}))
    return out


@routes.get("/containers/list")
@kleene(400)  # no error klee expects here: only input from other clients can be wrong
async def list_(request: web.Request):
    all_ = request.query.get("all", "false")
    if all_ not in ("true", "false"):
        raise InvalidInput(f"invalid all {all_!r}: use true or false")
    return web.json_response(await backend(request).read(_summaries, all_ == "true"))


@routes.get("/containers/{container_id}/inspect")
@kleene(404)
async def inspect(request: web.Request):
    inspected = await backend(request).read(lambda svc, i: svc.inspect_container(i), ident(request, "container_id"))
    return web.json_response({**inspected, "container": on_the_wire(inspected["container"])})


@routes.post("/containers/{container_id}/stop")
@kleene(404)
async def stop(request: web.Request):
    return web.json_response({"id": await backend(request).call("stop", ident(request, "container_id"))})


@routes.delete("/containers/{container_id}")
@kleene(404, 409)
async def remove(request: web.Request):
    return web.json_response({"id": await backend(request).call("remove", ident(request, "container_id"))})


@routes.post("/containers/prune")
@kleene(500)  # the only error klee expects here: a conflict (a container started meanwhile) is one too
async def prune(request: web.Request):
    return web.json_response(await backend(request).call("prune_containers"))
