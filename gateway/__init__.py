"""Siaga: a gateway from citizens' messages to LAPOR! and the 112 command centre."""

__version__ = "0.1.0"
