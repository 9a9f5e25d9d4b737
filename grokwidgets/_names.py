"""Names every layer shares: the layer that holds whole-model values."""

#: The ``layer`` coordinate of whole-model values (losses, accuracies, means over layers).
MODEL_LAYER = "model"
