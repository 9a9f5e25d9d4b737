"""Imported by the crash test's fork server only: warm it up so that each forked writer starts
training at once (torch imports much lazily on a first optimizer step). One thread, no run
directory: no thread pool and no zarr event loop exist to be lost in the fork."""

import torch

import grokwidgets as gw

torch.set_num_threads(1)
_task = gw.tasks.modular_arithmetic(p=5, op="+", train_fraction=0.5, seed=0)
_model = gw.models.MLP.for_task(_task, width=4, depth=1, embed_dim=2, seed=0)
gw.train(_task, _model, steps=3, lr=1e-2, progress=False)
