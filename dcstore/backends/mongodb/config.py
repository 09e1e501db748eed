"""URL options of ``mongodb://`` backends: MongoDB's own connection-string names, typed.

Driver options keep MongoDB's spelling (``readPreference``, ``replicaSet``, ``tls``...)
so connection strings copied from elsewhere work; dcstore's own options
(``bucket``, ``chunk_size``) are read by :class:`dcstore.backends.mongodb.MongoBackend`.
Secret options are never rendered back into a URL.
"""

from __future__ import annotations

from typing import Any

from dcstore.backends.options import Options
from dcstore.errors import ConfigError

# Driver options accepted in the URL (MongoDB connection-string names) and their types.
DRIVER_OPTIONS: dict[str, str] = {
    "w": "w",
    "journal": "bool",
    "wTimeoutMS": "int",
    "readPreference": "str",
    "readConcernLevel": "str",
    "replicaSet": "str",
    "directConnection": "bool",
    "authSource": "str",
    "authMechanism": "str",
    "tls": "bool",
    "tlsCAFile": "str",
    "tlsCertificateKeyFile": "str",
    "tlsCertificateKeyFilePassword": "str",
    "tlsAllowInvalidCertificates": "bool",
    "tlsAllowInvalidHostnames": "bool",
    "tlsInsecure": "bool",
    "serverSelectionTimeoutMS": "int",
    "connectTimeoutMS": "int",
    "socketTimeoutMS": "int",
    "maxPoolSize": "int",
    "appName": "str",
    "compressors": "str",
    "retryWrites": "bool",
    "retryReads": "bool",
}
SECRET_OPTIONS = frozenset({"tlsCertificateKeyFilePassword"})
DEFAULT_DRIVER_OPTIONS: dict[str, Any] = {
    "w": "majority",
    "serverSelectionTimeoutMS": 3000,
    "connectTimeoutMS": 3000,
    "socketTimeoutMS": 120_000,
}


def read_driver_options(options: Options) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind in DRIVER_OPTIONS.items():
        if kind == "bool":
            value: Any = options.flag(name, None)  # type: ignore[arg-type]
        elif kind == "int":
            value = options.raw(name)
            if value is not None:
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise ConfigError(
                        f"option {name!r} must be an integer, got {value!r}"
                    ) from None
        else:
            value = options.text(name)
            if kind == "w" and value is not None and value.isdigit():
                value = int(value)
        if value is not None:
            out[name] = value
    return out
