"""A plain componentize-py component for its default world, `wasi:http/proxy`
(no alorig SDK, no alorig WIT): what a Python developer gets from the
componentize-py docs. `/` answers 200; `/fetch?url=U` sends `GET U` through
`wasi:http/outgoing-handler` and answers `status=N` or `error=<ErrorCode case>`.
"""

from urllib.parse import parse_qs

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler, poll, types


def respond(response_out, status, text):
    body = text.encode()
    headers = types.Fields.from_list([("content-type", b"text/plain; charset=utf-8"), ("content-length", str(len(body)).encode())])
    response = types.OutgoingResponse(headers)
    response.set_status_code(status)
    out_body = response.body()
    types.ResponseOutparam.set(response_out, Ok(response))
    stream = out_body.write()
    stream.blocking_write_and_flush(body)
    stream.__exit__(None, None, None)
    types.OutgoingBody.finish(out_body, None)


def fetch(url):
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    request = types.OutgoingRequest(types.Fields())
    request.set_scheme(types.Scheme_Https() if scheme == "https" else types.Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query(slash + path)
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        return "error=" + type(e.value).__name__.removeprefix("ErrorCode_")
    future.subscribe().block()
    result = future.get()
    inner = result.value if result is not None else None
    if isinstance(inner, Err):
        return "error=" + type(inner.value).__name__.removeprefix("ErrorCode_")
    response = inner.value if isinstance(inner, Ok) else inner
    return f"status={response.status()}"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        target = request.path_with_query() or "/"
        path, _, query = target.partition("?")
        if path == "/fetch":
            url = parse_qs(query).get("url", ["http://127.0.0.1:9/"])[0]
            respond(response_out, 200, fetch(url))
        else:
            respond(response_out, 200, "hello from a plain componentize-py component\n")
