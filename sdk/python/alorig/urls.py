"""Django-style URL patterns: ``path("schools/<int:pk>/", view)``. Converters:
``str`` (default, no slash), ``int``, ``slug``, ``uuid``, ``path`` (anything).
A trailing slash is optional on both sides, so ``/schools/5`` and
``/schools/5/`` reach the same view."""

import re
import uuid as _uuid

_CONVERTERS = {
    "str": (r"[^/]+", str),
    "int": (r"[0-9]+", int),
    "slug": (r"[-a-zA-Z0-9_]+", str),
    "uuid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", _uuid.UUID),
    "path": (r".+", str),
}
_PARAM = re.compile(r"<(?:(?P<conv>[a-z]+):)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>")


class Route:
    def __init__(self, pattern, view, methods=None, name=None):
        self.pattern = pattern
        self.view = view
        self.methods = {m.upper() for m in methods} if methods else None
        self.name = name
        regex, self.converters, pos = "", {}, 0
        body = pattern.strip("/")
        for m in _PARAM.finditer(body):
            conv = m.group("conv") or "str"
            if conv not in _CONVERTERS:
                raise ValueError(f"route {pattern!r}: unknown converter {conv!r} (use {', '.join(_CONVERTERS)})")
            regex += re.escape(body[pos : m.start()]) + f"(?P<{m.group('name')}>{_CONVERTERS[conv][0]})"
            self.converters[m.group("name")] = _CONVERTERS[conv][1]
            pos = m.end()
        regex += re.escape(body[pos:])
        self.regex = re.compile(f"^{regex}/?$")

    def match(self, path):
        m = self.regex.match(path.lstrip("/"))
        if not m:
            return None
        return {k: self.converters[k](v) for k, v in m.groupdict().items()}


def path(pattern, view, methods=None, name=None):
    return Route(pattern, view, methods, name)
