"""Mondrian: photo critiques in the voice of master photographers."""

__version__ = "0.1.0"
