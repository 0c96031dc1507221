"""The classes componentize-py looks for: one per interface the component's
world exports (the build step's world follows the manifest, so only those that
exist are defined). Each calls the app's registered function; a Python
exception becomes the WIT ``error`` string (the run counts as failed and is
logged by the host). ``alorig_build.py`` generates the entry module that star-imports
this after the app module, so apps do not import it themselves.
"""

import sys
import traceback

from componentize_py_types import Err

import wit_world.exports as _w

from . import app as _app
from .http import read_request, write_response

__all__ = []


def _run(what, fn, *args):
    try:
        fn(*args)
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        raise Err(f"{what}: {type(e).__name__}: {e}") from None


if hasattr(_w, "IncomingHandler"):

    class IncomingHandler(_w.IncomingHandler):
        def handle(self, request, response_out):
            write_response(response_out, _app.current().dispatch(read_request(request)))

    __all__.append("IncomingHandler")


if hasattr(_w, "TimerHandler"):

    class TimerHandler(_w.TimerHandler):
        def on_timer(self, name, scheduled_at_ms):
            from .jobs import scheduled_at

            fn = _app.current().timers.get(name)
            if fn is None:
                raise Err(f"no @app.timer({name!r}) function")
            _run(f"timer {name}", fn, scheduled_at(scheduled_at_ms))

    __all__.append("TimerHandler")


if hasattr(_w, "JobHandler"):

    class JobHandler(_w.JobHandler):
        def on_job(self, id, name, payload, attempt):
            from .jobs import Job

            fn = _app.current().jobs.get(name)
            if fn is None:
                raise Err(f"no @app.job({name!r}) function")
            _run(f"job {name}", fn, Job(id, name, payload, attempt))

    __all__.append("JobHandler")


if hasattr(_w, "RedisHandler"):

    class RedisHandler(_w.RedisHandler):
        def on_message(self, channel, message):
            fn = _app.current().channels.get(channel)
            if fn is None:
                raise Err(f"no @app.on_message({channel!r}) function")
            _run(f"message on {channel}", fn, channel, message)

    __all__.append("RedisHandler")


if hasattr(_w, "WebsocketHandler"):

    class WebsocketHandler(_w.WebsocketHandler):
        def on_open(self, request):
            from .websocket import Open

            fn = _app.current().ws.get("open")
            if fn is not None:
                _run("websocket open", fn, Open(request))

        def on_message(self, connection, message):
            fn = _app.current().ws.get("message")
            if fn is not None:
                _run("websocket message", fn, connection, message.value)

        def on_close(self, connection, code):
            fn = _app.current().ws.get("close")
            if fn is not None:
                try:
                    fn(connection, code)
                except Exception:
                    traceback.print_exc(file=sys.stderr)

    __all__.append("WebsocketHandler")
