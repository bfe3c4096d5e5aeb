"""Baton: sequential learning across sites that cannot share their data."""

__version__ = "0.1.0"
