"""alorig: Python apps on alorig-host (componentize-py components).

    from alorig import App, Response, JsonResponse, db, redis, jobs, env, files

The build step (``alorig_build.py``) makes the component's world from
the manifest, so each capability module works only where the manifest grants
it. ``files`` is the app's ``[files]`` directory (``/data``, plain
``wasi:filesystem``, which every componentize-py component imports).
"""

from . import db, env, errors, files, jobs, redis, websocket
from .app import App
from .errors import AlorigError, DatabaseError, Http404, HttpError, IntegrityError, PermissionDenied, RedisError
from .http import HttpResponse, JsonResponse, Request, Response, redirect
from .urls import path

__all__ = [
    "App", "Request", "Response", "HttpResponse", "JsonResponse", "redirect", "path",
    "db", "redis", "jobs", "websocket", "env", "files", "errors",
    "AlorigError", "DatabaseError", "IntegrityError", "RedisError", "HttpError", "Http404", "PermissionDenied",
]
