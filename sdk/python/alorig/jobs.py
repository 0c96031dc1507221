"""Jobs the app schedules (``alorig:host/timers``): run later by the app's own
``@app.job(name)`` function, retried with backoff per the manifest's ``[jobs]``.

    jobs.schedule("send_report", {"school": 5}, delay=60)   # -> job id
    jobs.schedule("close_term", b"...", at=datetime(...))   # an aware datetime
    jobs.cancel(job_id)
"""

import datetime as _dt
import json as _json

from componentize_py_types import Err

from . import errors


class Job:
    """What a ``@app.job`` function receives."""

    def __init__(self, id, name, payload, attempt):
        self.id, self.name, self.payload, self.attempt = id, name, payload, attempt

    def json(self):
        return _json.loads(self.payload or b"null")


# Imported when the component is built (componentize-py snapshots the
# interpreter then; a module first imported at run time is not found).
try:
    from wit_world.imports import timers as _timers
except ImportError:  # the world has no timers: the manifest does not grant it
    _timers = None


def _t():
    if _timers is None:
        raise errors.AlorigError("not-granted", "this component was built without alorig:host/timers: add [jobs] to the manifest and rebuild")
    return _timers


def _call(fn, *args):
    try:
        return fn(*args)
    except Err as e:
        variant = e.value
        msg = getattr(variant, "value", "")
        raise errors.JobError(errors.kebab(variant), msg if isinstance(msg, str) else "", variant) from None


def schedule(name, payload=b"", delay=0, at=None, key=None):
    """Schedules job ``name`` after ``delay`` seconds, or at the aware datetime
    ``at``; a payload that is not bytes is sent as JSON. ``key`` makes it
    idempotent (scheduling the same key again returns the first job's id)."""
    t = _t()
    if not isinstance(payload, (bytes, bytearray)):
        payload = _json.dumps(payload).encode()
    if at is not None:
        if at.tzinfo is None:
            raise ValueError("jobs.schedule: `at` must be an aware datetime (e.g. tzinfo=timezone.utc)")
        when = t.When_AtMs(int(at.timestamp() * 1000))
    else:
        when = t.When_AfterMs(int(delay * 1000))
    return _call(t.schedule, t.Job(name=name, payload=bytes(payload), when=when, idempotency_key=key))


def cancel(job_id):
    return _call(_t().cancel, job_id)


def scheduled_at(ms):
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
