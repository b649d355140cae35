"""/networks: Kleene's network calls."""

from __future__ import annotations

from aiohttp import web

from kleenenet.api.app import backend, ident, json_body, kleene
from kleenenet.api.schemas import EndPointConfig, NetworkConfig

routes = web.RouteTableDef()


@routes.post("/networks/create")
@kleene(409)
async def create(request: web.Request):
    config = NetworkConfig.parse(await json_body(request))
    net = await backend(request).call(
        "create_network", config.name, config.type, subnet=config.subnet, subnet6=config.subnet6,
        interface=config.interface, gateway=config.gateway, gateway6=config.gateway6, nat=config.nat,
        icc=config.icc, internal=config.internal, mtu=config.mtu, nat6=config.nat6, ip_range=config.ip_range,
        ip_range6=config.ip_range6, force=config.force)
    return web.json_response({"id": net.id}, status=201)


@routes.get("/networks/list")
@kleene(500)
async def list_(request: web.Request):
    nets = await backend(request).read(lambda svc: svc.store.networks())
    return web.json_response([n.model_dump() for n in nets])


@routes.get("/networks/{network_id}/inspect")
@kleene(404)
async def inspect(request: web.Request):
    inspected = await backend(request).read(lambda svc, i: svc.inspect_network(i), ident(request, "network_id"))
    return web.json_response(inspected)


@routes.delete("/networks/{network_id}")
@kleene(404)
async def remove(request: web.Request):
    """As in Kleene, connected containers are disconnected first."""
    nid = await backend(request).call("remove_network", ident(request, "network_id"), disconnect=True)
    return web.json_response({"id": nid})


@routes.post("/networks/prune")
@kleene(500)  # the only error klee expects here: a conflict (a network joined meanwhile) is one too
async def prune(request: web.Request):
    return web.json_response(await backend(request).call("prune_networks"))


@routes.post("/networks/connect")
@kleene(409, 404)
async def connect(request: web.Request):
    config = EndPointConfig.parse(await json_body(request))
    await backend(request).call("connect", config.container, config.network, config.ip_address, config.ip_address6)
    return web.Response(status=204)


@routes.post("/networks/{network_id}/disconnect/{container_id}")
@kleene(404)
async def disconnect(request: web.Request):
    await backend(request).call("disconnect", ident(request, "container_id"), ident(request, "network_id"))
    return web.Response(status=204)
