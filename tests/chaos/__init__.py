"""Chaos over the distributed stack: a seeded fault schedule through a real fault proxy
(Toxiproxy) and real process faults, while two ranks read encrypted datasets and a
parallel pack writes new versions. ``python -m chaos.run --help`` (from ``tests/``) runs
it long; ``tests/test_chaos.py`` runs it short."""
