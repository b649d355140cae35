"""/images: the images containers are made from (added with `kleenenet image add`)."""

from __future__ import annotations

from aiohttp import web

from kleenenet.api.app import backend, ident, kleene

routes = web.RouteTableDef()


def kleene_image(img) -> dict:
    """Kleene's image (`dataset` is a ZFS image's snapshot), and kleenenet's `root`."""
    return {"id": img.id, "name": img.name, "tag": img.tag, "cmd": [], "env": [], "user": "",
            "dataset": img.snapshot, "root": img.root, "created": img.created, "instructions": []}


@routes.get("/images/list")
@kleene(400)  # no error klee expects here: only input from other clients can be wrong
async def list_(request: web.Request):
    images = await backend(request).read(lambda svc: svc.store.images())
    return web.json_response([kleene_image(img) for img in images])


@routes.get("/images/{image_id}/inspect")
@kleene(404)
async def inspect(request: web.Request):
    img = await backend(request).read(lambda svc, i: svc.store.image(i), ident(request, "image_id"))
    return web.json_response(kleene_image(img))


@routes.delete("/images/{image_id}")
@kleene(404)
async def remove(request: web.Request):
    return web.json_response({"id": await backend(request).call("remove_image", ident(request, "image_id"))})
