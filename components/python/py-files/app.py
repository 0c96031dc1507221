"""Test guest: the SDK's ``alorig.files`` over the app's ``/data``. Every route
takes the file's name in ``?name=`` (so ``..`` reaches the SDK unnormalised)
and answers a ``FilesError`` as ``<status> <kind>``: 403 not-permitted,
404 not-found, 507 quota-exceeded or io (a full quota mid-write; see files.py)."""

from alorig import App, Response, files
from alorig.files import FilesError

app = App()

_STATUS = {"not-permitted": 403, "not-found": 404, "quota-exceeded": 507, "io": 507}


def _guarded(view):
    def run(request):
        try:
            return view(request, request.GET.get("name", ""))
        except FilesError as err:
            return Response(f"{err.kind}\n", status=_STATUS.get(err.kind, 500), content_type="text/plain")

    return run


@app.get("file")
@_guarded
def read(request, name):
    return Response(files.read(name), content_type="application/octet-stream")


@app.put("file")
@_guarded
def write(request, name):
    files.write(name, request.body)
    return Response("written\n", status=201, content_type="text/plain")


@app.post("file")
@_guarded
def append(request, name):
    files.append(name, request.body)
    return Response("appended\n", content_type="text/plain")


@app.delete("file")
@_guarded
def delete(request, name):
    files.delete(name)
    return Response(status=204)


@app.get("list")
@_guarded
def listing(request, name):
    return {"names": files.list(name), "exists": files.exists(name)}
