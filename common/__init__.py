"""Shared layer of robust-retrieval: data, backbones, metrics, launcher, logging and callbacks.

Importing :mod:`common` registers the OmegaConf resolvers (one module, no side-effect registry of classes).
"""

from common.config import resolvers as _resolvers  # noqa: F401  (registers OmegaConf resolvers once)
