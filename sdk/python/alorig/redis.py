"""Redis through ``alorig:host/redis``: keys are the app's own (the host prefixes
each with the manifest's ``[redis] prefix`` in the app's DB), values are bytes;
``str`` values are sent as UTF-8 for convenience, and ``get_str`` reads one back.

    redis.set("school:5:count", "42", ttl=60)        # seconds, like redis-py's ex=
    redis.get("school:5:count")                      # b"42" or None
    redis.incr("hits")
"""

import builtins

from componentize_py_types import Err

from . import errors


# Imported when the component is built (componentize-py snapshots the
# interpreter then; a module first imported at run time is not found).
try:
    from wit_world.imports import redis as _redis
except ImportError:  # the world has no redis: the manifest does not grant it
    _redis = None


def _r():
    if _redis is None:
        raise errors.AlorigError("not-granted", "this component was built without alorig:host/redis: add [redis] to the manifest and rebuild")
    return _redis


def _b(v):
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v).encode()
    return bytes(v)


def _call(fn, *args):
    try:
        return fn(*args)
    except Err as e:
        variant = e.value
        msg = getattr(variant, "value", "")
        raise errors.RedisError(errors.kebab(variant), msg if isinstance(msg, str) else "", variant) from None


def get(key):
    return _call(_r().get, key)


def get_str(key):
    v = get(key)
    return None if v is None else v.decode()


def set(key, value, ttl=None, nx=False, xx=False):
    """Sets ``key``; ``ttl`` in seconds (float allowed); ``nx`` only if absent,
    ``xx`` only if present. True when it was set."""
    r = _r()
    cond = r.SetCondition.IF_ABSENT if nx else r.SetCondition.IF_PRESENT if xx else r.SetCondition.ALWAYS
    ttl_ms = None if ttl is None else int(ttl * 1000)
    return _call(r.set, key, _b(value), r.SetOptions(ttl_ms=ttl_ms, condition=cond))


def delete(*keys):
    return _call(_r().del_, list(keys))


def exists(*keys):
    return _call(_r().exists, list(keys))


def incr(key, amount=1):
    return _call(_r().incr_by, key, amount)


def expire(key, seconds):
    return _call(_r().expire, key, int(seconds * 1000))


def hget(key, field):
    return _call(_r().hget, key, field)


def hset(key, mapping):
    return _call(_r().hset, key, [(k, _b(v)) for k, v in mapping.items()])


def hgetall(key):
    return dict(_call(_r().hgetall, key))


def hincr(key, field, amount=1):
    return _call(_r().hincr_by, key, field, amount)


def sadd(key, *members):
    return _call(_r().sadd, key, [_b(m) for m in members])


def smembers(key):
    return builtins.set(_call(_r().smembers, key))


def lpush(key, *values):
    return _call(_r().lpush, key, [_b(v) for v in values])


def rpush(key, *values):
    return _call(_r().rpush, key, [_b(v) for v in values])


def lrange(key, start, stop):
    return _call(_r().lrange, key, start, stop)


def publish(channel, message):
    return _call(_r().publish, channel, _b(message))


def raw():
    """The generated bindings module, for what this wrapper does not cover
    (``pipeline``, sorted sets, ...)."""
    return _r()

