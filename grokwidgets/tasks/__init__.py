"""Datasets as :class:`Task` objects, one module per task family.

Every family constructor records its arguments in ``task.config`` so that
:func:`from_config` rebuilds the same task; :func:`from_tensors` wraps the user's own data.
"""

from .base import Task, families, from_config, register_family
from .custom import from_tensors
from .mnist import mnist
from .modular import modular_arithmetic
from .polynomial import polynomial_regression
from .teacher import teacher_student

__all__ = [
    "Task",
    "families",
    "from_config",
    "from_tensors",
    "mnist",
    "modular_arithmetic",
    "polynomial_regression",
    "register_family",
    "teacher_student",
]
