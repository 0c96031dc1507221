"""Typed errors: every host call that fails raises one of these, carrying the
WIT variant it came from (``exc.variant``: the generated dataclass, e.g.
``postgres.Error_ConstraintViolation``) so nothing the host said is lost.
"""


class AlorigError(Exception):
    """A host capability refused or failed a call. ``kind`` is the WIT variant's
    case name (``"constraint-violation"``, ``"timeout"``, ...); ``variant`` the
    generated value itself."""

    def __init__(self, kind, message="", variant=None):
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message
        self.variant = variant


class DatabaseError(AlorigError):
    """``alorig:host/postgres`` error; ``sqlstate`` as PostgreSQL reports it."""

    def __init__(self, kind, message="", variant=None, sqlstate=""):
        super().__init__(kind, message, variant)
        self.sqlstate = sqlstate


class IntegrityError(DatabaseError):
    """A constraint was violated (Django's name); ``constraint`` names it."""

    def __init__(self, kind, message="", variant=None, sqlstate="", constraint=""):
        super().__init__(kind, message, variant, sqlstate)
        self.constraint = constraint


class DatabaseUnavailable(DatabaseError):
    pass


class DatabaseTimeout(DatabaseError):
    pass


class RedisError(AlorigError):
    """``alorig:host/redis`` error (``wrong-type``, ``unavailable``, ``timeout``, ``invalid``, ``other``)."""


class JobError(AlorigError):
    """``alorig:host/timers`` error (``invalid``, ``unavailable``)."""


class WebSocketError(AlorigError):
    """``alorig:host/websocket`` error (``closed``, ``invalid``, ``unavailable``)."""


class HttpError(Exception):
    """Raise from a view to answer with this status (``raise HttpError(403, "not yours")``)."""

    def __init__(self, status, message=""):
        super().__init__(message or str(status))
        self.status = status
        self.message = message


class Http404(HttpError):
    def __init__(self, message="not found"):
        super().__init__(404, message)


class PermissionDenied(HttpError):
    def __init__(self, message="forbidden"):
        super().__init__(403, message)


def kebab(variant):
    """``Error_ConstraintViolation`` -> ``constraint-violation``."""
    name = type(variant).__name__.split("_", 1)[-1]
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("-")
        out.append(ch.lower())
    return "".join(out)


def unwrap(err, make):
    """Turns a componentize-py ``Err`` into the typed exception ``make(variant)``."""
    value = getattr(err, "value", err)
    return make(value)
