"""The app's ``[env]`` and ``[secrets]`` (the only variables the host gives it),
read from ``wasi:cli/environment`` at call time — not ``os.environ``, which
componentize-py fixes when the component is built (pre-initialisation).
"""

try:  # imported at build time (see db.py)
    from wit_world.imports import environment as _environment
except ImportError:
    _environment = None



def environ():
    """Read on every call: a value read while the component is built (module
    level, pre-initialisation) would be the build machine's, not the manifest's."""
    return dict(_environment.get_environment()) if _environment else {}


def get(name, default=None):
    return environ().get(name, default)


def secret(name):
    """A ``[secrets]`` value; a missing one is an error, not an empty string."""
    value = environ().get(name)
    if value is None:
        raise KeyError(f"secret {name} is not set (add it to the manifest's [secrets])")
    return value
