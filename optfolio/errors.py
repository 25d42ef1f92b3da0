"""Errors the CLI reports as one clear line (and a non-zero exit) instead of a traceback."""

from __future__ import annotations


class OptfolioError(Exception):
    """Base class: the message alone tells the user what is wrong and where."""


class InputError(OptfolioError, ValueError):
    """Bad input: the message names the item and the field."""


class ServiceUnavailable(OptfolioError, RuntimeError):
    """A service the job needs (Docker engine, sandbox image, model endpoint) is not there."""
