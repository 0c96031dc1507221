"""The application object: the route table and the functions the host calls
for timers, jobs, Redis messages and WebSocket events. One ``App()`` per
component; the handlers in :mod:`alorig.exports` dispatch to it.

    app = App()

    @app.route("schools/<int:pk>/")              # any method; or methods=["GET"]
    def school(request, pk): ...

    @app.timer("attendance_report")              # [[timers]] name in the manifest
    def report(scheduled_at): ...

    @app.job("send_report")                      # jobs.schedule("send_report", ...)
    def send_report(job): ...
"""

import sys
import traceback

from . import errors
from .http import Response
from .urls import Route

_APP = None


def current():
    if _APP is None:
        raise RuntimeError("no alorig.App() was created by the app module")
    return _APP


class App:
    def __init__(self, urlpatterns=()):
        global _APP
        self.routes = list(urlpatterns)
        self.timers = {}
        self.jobs = {}
        self.channels = {}
        self.ws = {}
        self.before = []
        _APP = self

    # -- HTTP -------------------------------------------------------------
    def route(self, pattern, methods=None, name=None):
        def register(view):
            self.routes.append(Route(pattern, view, methods, name))
            return view

        return register

    def get(self, pattern, name=None):
        return self.route(pattern, ["GET", "HEAD"], name)

    def post(self, pattern, name=None):
        return self.route(pattern, ["POST"], name)

    def put(self, pattern, name=None):
        return self.route(pattern, ["PUT"], name)

    def delete(self, pattern, name=None):
        return self.route(pattern, ["DELETE"], name)

    def before_request(self, fn):
        """``fn(request)`` runs before every view (authentication, ...); a
        Response it returns is sent instead of calling the view."""
        self.before.append(fn)
        return fn

    def dispatch(self, request):
        """The Response for ``request``: the first matching route's view; 404/405
        when none matches; an ``HttpError`` as its status; anything else 500
        (the traceback goes to stderr, which the host logs)."""
        try:
            allowed = set()
            for route in self.routes:
                kwargs = route.match(request.path)
                if kwargs is None:
                    continue
                if route.methods and request.method not in route.methods:
                    allowed |= route.methods
                    continue
                request.kwargs = kwargs
                for hook in self.before:
                    early = hook(request)
                    if early is not None:
                        return early
                result = route.view(request, **kwargs)
                return _as_response(result)
            if allowed:
                return Response("method not allowed\n", 405, "text/plain; charset=utf-8", {"allow": ", ".join(sorted(allowed))})
            return Response("not found\n", 404, "text/plain; charset=utf-8")
        except errors.HttpError as e:
            return Response(f"{e.message or e.status}\n", e.status, "text/plain; charset=utf-8")
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return Response("internal server error\n", 500, "text/plain; charset=utf-8")

    # -- timers, jobs, Redis messages, WebSocket events ----------------------
    def timer(self, name):
        def register(fn):
            self.timers[name] = fn
            return fn

        return register

    def job(self, name):
        def register(fn):
            self.jobs[name] = fn
            return fn

        return register

    def on_message(self, channel):
        """A Redis message on ``channel`` (from the manifest's ``[redis] channels``): ``fn(channel, bytes)``."""

        def register(fn):
            self.channels[channel] = fn
            return fn

        return register

    def ws_open(self, fn):
        """``fn(open)``: accept by returning; refuse (403) by raising."""
        self.ws["open"] = fn
        return fn

    def ws_message(self, fn):
        """``fn(connection, data)``: data is ``str`` (text) or ``bytes`` (binary)."""
        self.ws["message"] = fn
        return fn

    def ws_close(self, fn):
        """``fn(connection, code)``."""
        self.ws["close"] = fn
        return fn


def _as_response(result):
    if isinstance(result, Response):
        return result
    if isinstance(result, (dict, list)):
        from .http import JsonResponse

        return JsonResponse(result)
    if isinstance(result, (str, bytes)):
        return Response(result)
    raise TypeError(f"a view returned {type(result).__name__}; return a Response, str, bytes, dict or list")
