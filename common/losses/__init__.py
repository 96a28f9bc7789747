"""Loss building blocks shared by several methods."""
