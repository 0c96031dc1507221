"""Test guest: shows whether an instance is reused. Each instance picks a
random id on its first request (not at build time: componentize-py snapshots
module-level state) and counts the requests it served: `instance=<id> served=<n>`.
`/env` answers the manifest's `GREETING`; `/grow?mb=N` keeps N MiB alive in the
instance (memory figures)."""

import os

from alorig import App, Response, env

app = App()
_state = {"id": None, "served": 0, "ballast": []}


@app.get("/")
def index(request):
    if _state["id"] is None:
        _state["id"] = os.urandom(6).hex()
    _state["served"] += 1
    return Response(f"instance={_state['id']} served={_state['served']}\n", content_type="text/plain")


@app.get("env")
def greeting(request):
    return {"greeting": env.get("GREETING"), "missing": env.get("NOPE", "default")}


@app.get("grow")
def grow(request):
    _state["ballast"].append(bytearray(int(request.GET.get("mb", "1")) << 20))
    return {"held_mib": sum(len(b) for b in _state["ballast"]) >> 20}
