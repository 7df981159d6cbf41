"""Running a held job (claimed by a dispatcher, or recorded for a waiting client) on the workers' queue: each
attempt until the job's deadline (``attempts``), its lease, progress and outcome in the store (``held``)."""

from jobs.running.attempts import DeadlinePassed, run_until_deadline
from jobs.running.held import LOST, Ending, HeldRuns, holder_name, stored_images

__all__ = ["LOST", "DeadlinePassed", "Ending", "HeldRuns", "holder_name", "run_until_deadline", "stored_images"]
