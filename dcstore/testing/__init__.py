"""Test helpers that ship with dcstore, so third-party backends can prove themselves."""
