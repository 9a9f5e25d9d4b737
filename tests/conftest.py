"""Shared fixtures: small tasks and a deterministic torch setup."""

import pytest
import torch

import grokwidgets as gw


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield


@pytest.fixture
def mod_task():
    return gw.tasks.modular_arithmetic(p=11, op="+", train_fraction=0.5, seed=0)


@pytest.fixture
def reg_task():
    return gw.tasks.teacher_student(d=6, n_train=40, n_test=30, hidden=8, seed=0)
