"""``python -m dcstore.cli``."""

from dcstore.cli.main import entry

entry()
