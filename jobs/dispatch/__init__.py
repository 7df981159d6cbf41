"""Dispatch: jobs from the store to the workers' queue and their outcomes back (``dispatcher``), each job tried
until its own deadline (``attempts``)."""

from jobs.dispatch.dispatcher import Dispatcher, DispatchOptions

__all__ = ["DispatchOptions", "Dispatcher"]
