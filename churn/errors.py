"""Errors that name what is wrong with a user's data set or source, shown as-is in the UI."""

from __future__ import annotations


class DatasetError(ValueError):
    """A data set cannot be ingested: the message says which source, which column and why."""


class SourceUnavailable(DatasetError):
    """The source could not be reached or read just now (network, server error): worth a retry."""
