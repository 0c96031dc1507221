"""The app's private directory (manifest ``[files]``), preopened by the host as
``/data`` through standard ``wasi:filesystem``: plain ``open()`` works on it too;
these helpers take names relative to it and raise ``FilesError`` for what the
host refused.

    files.write("sites/5/index.html", html)      # str (UTF-8) or bytes; makes folders
    files.read("sites/5/index.html")             # bytes; files.read_str(...) for text
    files.append("log.txt", "line\\n")
    files.list("sites")                          # sorted names
    files.delete("sites/5/index.html")           # frees its bytes in the quota

A path that leads out of ``/data`` (``..``, an absolute path, a symlink out) is
refused by the host (``FilesError("not-permitted")``); a ``read_only`` directory
refuses every change the same way. A write past the quota: the host answers
``insufficient-space``, but wasi-libc (under CPython's ``open``) reports a failed
file-stream write as EIO, so it arrives as ``FilesError("io")`` unless the
refusal came on creating a file or folder (``FilesError("quota-exceeded")``).
"""

import errno
import os

from . import errors

ROOT = "/data"


class FilesError(errors.AlorigError):
    """``quota-exceeded``, ``not-found``, ``not-permitted`` or ``io``."""


def path(name):
    """``/data/<name>``; a leading ``/`` is dropped (names are relative to /data)."""
    return os.path.join(ROOT, str(name).lstrip("/"))


def _kind(err):
    return {
        errno.ENOSPC: "quota-exceeded",
        errno.ENOENT: "not-found",
        errno.EPERM: "not-permitted",
        errno.EACCES: "not-permitted",
        errno.EROFS: "not-permitted",
    }.get(err.errno, "io")


def _call(fn, *args):
    try:
        return fn(*args)
    except OSError as err:
        raise FilesError(_kind(err), f"{args[0] if args else ''}: {err.strerror or err}") from None


def _bytes(data):
    return data.encode() if isinstance(data, str) else bytes(data)


def _write(name, data, mode):
    target = path(name)
    folder = os.path.dirname(target)
    if folder != ROOT:
        os.makedirs(folder, exist_ok=True)
    with open(target, mode) as f:
        f.write(_bytes(data))


def write(name, data):
    _call(_write, name, data, "wb")


def append(name, data):
    _call(_write, name, data, "ab")


def _read(name):
    with open(path(name), "rb") as f:
        return f.read()


def read(name):
    return _call(_read, name)


def read_str(name):
    return read(name).decode()


def exists(name):
    return os.path.exists(path(name))


def delete(name):
    _call(os.remove, path(name))


def list(folder=""):  # noqa: A001 (the module's verb, like redis.get)
    return sorted(_call(os.listdir, path(folder)))
