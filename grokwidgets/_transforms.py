"""One torch.func transform at a time in this process.

``torch.func`` keeps its transform levels (vmap, grad/vjp, forward-mode jvp) in process-wide
state, not per thread: two threads inside transforms at once mix them up. Measured with
torch 2.13: two threads each running ``vmap(jacrev(f))`` returned wrong Jacobians with no
error, and two running ``jvp`` raised "Trying to access a forward AD level with an invalid
index". Two runs share a process when a dask worker has several threads (``gw.sweep`` on
``LocalCluster(threads_per_worker=2)``), or when the Explorer computes a checkpoint's
diagnostics in its thread while a run trains. Every transform grokwidgets calls holds this
lock; plain autograd (training) does not need it and runs alongside.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

__all__ = ["TRANSFORMS", "forward_mode"]

#: Held around each top-level ``torch.func`` transform call (re-entrant: transforms nest).
TRANSFORMS = threading.RLock()


@contextlib.contextmanager
def forward_mode() -> Iterator[None]:
    """Hold :data:`TRANSFORMS` for a ``torch.func.jvp`` call, quietly.

    torch's first forward-mode call scripts its decompositions and warns that
    ``torch.jit.script`` is deprecated: a note the user cannot act on.
    """
    with TRANSFORMS, warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*torch.jit.script", DeprecationWarning)
        yield
