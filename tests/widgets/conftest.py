"""Fixtures of the widget tests."""

from tests.replay._checkpointed import one_thread, runs, sparse  # noqa: F401
