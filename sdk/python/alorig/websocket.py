"""WebSockets (``alorig:host/websocket``): the host holds the sockets, the app
gets events (``@app.ws_open``, ``@app.ws_message``, ``@app.ws_close``) and
sends through these functions. Messages: ``str`` goes as text, ``bytes`` as binary.
"""

from componentize_py_types import Err

from . import errors


# Imported when the component is built (componentize-py snapshots the
# interpreter then; a module first imported at run time is not found).
try:
    from wit_world.imports import websocket as _websocket
except ImportError:  # the world has no websocket: the manifest does not grant it
    _websocket = None


def _w():
    if _websocket is None:
        raise errors.AlorigError("not-granted", "this component was built without alorig:host/websocket: add a [[routes]] entry with websocket = true to the manifest and rebuild")
    return _websocket


def _message(w, data):
    return w.Message_Text(data) if isinstance(data, str) else w.Message_Binary(bytes(data))


def _call(fn, *args):
    try:
        return fn(*args)
    except Err as e:
        variant = e.value
        msg = getattr(variant, "value", "")
        raise errors.WebSocketError(errors.kebab(variant), msg if isinstance(msg, str) else "", variant) from None


def send(connection, data):
    w = _w()
    _call(w.send, connection, _message(w, data))


def send_group(group, data):
    w = _w()
    _call(w.send_group, group, _message(w, data))


def join(connection, group):
    _call(_w().join, connection, group)


def leave(connection, group):
    _call(_w().leave, connection, group)


def close(connection, code=1000, reason=""):
    _call(_w().close, connection, code, reason)


class Open:
    """What ``@app.ws_open`` receives: the connection id, path, query, headers."""

    def __init__(self, request):
        from .http import Headers, QueryDict

        self.connection = request.connection
        self.path = request.path
        self.GET = QueryDict(request.query)
        self.headers = Headers(request.headers)


def text(message):
    """A received message as ``str`` (text) or ``bytes`` (binary)."""
    return message.value
