"""Small training loops the tests share: a user's SGD loop around a Monitor, a tiny gw.train."""

from pathlib import Path

import torch
import torch.nn.functional as F

import grokwidgets as gw
from grokwidgets.monitor.cadence import Every


def sgd_loop(model, task, mon, steps, lr=0.5):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        loss = F.cross_entropy(model(task.x_train), task.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(step)
        if mon.stop_requested:
            return step
    return None


def train_tiny(
    run: Path, steps: int, *, resume: bool = False, diagnostics: tuple[str, ...] = ("basic",)
) -> None:
    """``gw.train`` of a + b mod 7 on a tiny MLP, a record every step, into ``run``."""
    task = gw.tasks.modular_arithmetic(p=7, op="+", train_fraction=0.5, seed=0)
    model = gw.models.MLP.for_task(task, width=8, depth=1, embed_dim=4, seed=0)
    gw.train(
        task,
        model,
        steps=steps,
        lr=1e-2,
        dir=run,
        progress=False,
        cadence=Every(1),
        resume=resume,
        seed=0,
        diagnostics=list(diagnostics),
    )
