"""alorig: Python apps on alorig-host (componentize-py components).

    from alorig import App, Response, JsonResponse, db, redis, jobs, env

The build step (``alorig_build.py``) makes the component's world from
the manifest, so each capability module works only where the manifest grants
it. Files (an ``alorig:host/files`` capability) will get its module here,
``alorig.files``, next to ``db`` and ``redis``.
"""

from . import db, env, errors, jobs, redis, websocket
from .app import App
from .errors import AlorigError, DatabaseError, Http404, HttpError, IntegrityError, PermissionDenied, RedisError
from .http import HttpResponse, JsonResponse, Request, Response, redirect
from .urls import path

__all__ = [
    "App", "Request", "Response", "HttpResponse", "JsonResponse", "redirect", "path",
    "db", "redis", "jobs", "websocket", "env", "errors",
    "AlorigError", "DatabaseError", "IntegrityError", "RedisError", "HttpError", "Http404", "PermissionDenied",
]
