"""acts/ -> sae/: the training wing (loop, recipe, sparse kernels, checkpoints, plot, import).

    train_sae(TrainConfig)            the loop (loop.py) over the recipe (recipe.py)
    import_sae(folder, acts, out)     a sparsify SAE -> our format (import_sae.py)
"""

from .import_sae import import_sae
from .loop import train_sae

__all__ = ["import_sae", "train_sae"]
