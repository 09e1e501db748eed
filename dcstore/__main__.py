"""``python -m dcstore``: the ``dcstore`` command, where its script is not on PATH."""

from dcstore.cli.main import entry

entry()
