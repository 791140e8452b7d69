"""The outbox: every acknowledged submission, stored durably, and its delivery to the provider.

``base`` is the seam (the :class:`Outbox` protocol and its records); ``sqlite`` the default
backend, ``memory`` one for tests; ``delivery`` works any of them.
"""

from certwidget.outbox.base import NewSubmission, Outbox, Submission, SubmissionState

__all__ = ["NewSubmission", "Outbox", "Submission", "SubmissionState"]
