"""Requests and responses in the shape Django developers know: ``request.GET``,
``request.POST``, ``request.headers``, ``request.body``, ``request.json()``;
``Response`` (``HttpResponse``), ``JsonResponse``, ``redirect``; and the glue
that reads a ``wasi:http`` incoming request and writes the answer back.
"""

import json as _json
from urllib.parse import parse_qs, unquote

from componentize_py_types import Err, Ok
from wit_world.imports import streams, types

# wasi:io output streams take at most 4096 bytes per blocking write.
_CHUNK = 4096


class QueryDict(dict):
    """``name -> last value`` like Django's QueryDict, with ``getlist``."""

    def __init__(self, text=""):
        self._lists = parse_qs(text, keep_blank_values=True) if text else {}
        super().__init__({k: v[-1] for k, v in self._lists.items()})

    def getlist(self, key, default=None):
        return list(self._lists.get(key, default or []))


class Headers(dict):
    """Case-insensitive header names; values are ``str`` (several joined with ", ")."""

    def __init__(self, entries=()):
        super().__init__()
        for name, value in entries:
            name = name.lower()
            text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value
            super().__setitem__(name, f"{self[name]}, {text}" if name in self else text)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


class Request:
    """One HTTP request. ``path`` has no query; ``GET`` the query parameters;
    ``POST`` form fields (``application/x-www-form-urlencoded``); ``body`` bytes."""

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query_string = query
        self.GET = QueryDict(query)
        self.headers = headers
        self.body = body
        self.kwargs = {}
        self._post = None

    @property
    def POST(self):
        if self._post is None:
            ctype = self.headers.get("content-type", "")
            self._post = QueryDict(self.body.decode()) if ctype.startswith("application/x-www-form-urlencoded") else QueryDict()
        return self._post

    def json(self):
        """The body parsed as JSON; a malformed body answers 400."""
        from .errors import HttpError

        try:
            return _json.loads(self.body or b"null")
        except ValueError as e:
            raise HttpError(400, f"the body is not valid JSON: {e}") from None

    def __repr__(self):
        return f"<Request {self.method} {self.path}>"


class Response:
    """``Response(content, status=200, content_type=..., headers={...})`` — Django's
    ``HttpResponse``. ``content`` is str (sent as UTF-8) or bytes."""

    def __init__(self, content=b"", status=200, content_type="text/html; charset=utf-8", headers=None):
        self.content = content.encode() if isinstance(content, str) else bytes(content)
        self.status_code = status
        self.headers = {"content-type": content_type}
        for k, v in (headers or {}).items():
            self.headers[k.lower()] = v

    def __setitem__(self, name, value):
        self.headers[name.lower()] = value

    def __getitem__(self, name):
        return self.headers[name.lower()]


HttpResponse = Response


class JsonResponse(Response):
    def __init__(self, data, status=200, headers=None):
        super().__init__(_json.dumps(data, default=str), status, "application/json", headers)


def redirect(location, permanent=False):
    return Response(b"", 301 if permanent else 302, headers={"location": location})


def _method(m):
    name = type(m).__name__
    return m.value.upper() if name == "Method_Other" else name.split("_", 1)[1].upper()


def read_request(incoming):
    """The wasi:http request as a :class:`Request` (the whole body read: the host
    already refused one larger than the manifest's ``max_body``)."""
    target = incoming.path_with_query() or "/"
    path, _, query = target.partition("?")
    headers = Headers(incoming.headers().entries())
    body = b""
    incoming_body = incoming.consume()
    stream = incoming_body.stream()
    chunks = []
    while True:
        try:
            chunk = stream.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise
        chunks.append(chunk)
    stream.__exit__(None, None, None)
    types.IncomingBody.finish(incoming_body)
    body = b"".join(chunks)
    return Request(_method(incoming.method()), unquote(path), query, headers, body)


def write_response(response_out, response):
    """Sends ``response`` (a :class:`Response`) through the wasi:http outparam."""
    body = response.content
    entries = [(k, str(v).encode()) for k, v in response.headers.items()]
    entries.append(("content-length", str(len(body)).encode()))
    outgoing = types.OutgoingResponse(types.Fields.from_list(entries))
    outgoing.set_status_code(response.status_code)
    out_body = outgoing.body()
    types.ResponseOutparam.set(response_out, Ok(outgoing))
    stream = out_body.write()
    for i in range(0, len(body), _CHUNK):
        stream.blocking_write_and_flush(body[i : i + _CHUNK])
    stream.__exit__(None, None, None)
    types.OutgoingBody.finish(out_body, None)
