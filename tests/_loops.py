"""A plain SGD loop around a Monitor, as a user writes one, for the detector and watcher tests."""

import torch
import torch.nn.functional as F


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
