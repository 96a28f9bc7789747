"""Shared layer of robust-retrieval: data, backbones, metrics, launcher, logging and callbacks.

Importing :mod:`common` registers the OmegaConf resolvers when omegaconf is installed (one module, no side-effect
registry of classes).
"""

import logging as _logging

# The resolvers serve Hydra configs; without omegaconf (e.g. a bare torch install running only the metrics on a GPU
# node) no config can be loaded, so there is nothing to register.
try:
    import omegaconf as _omegaconf  # noqa: F401
except ImportError:
    pass
else:
    from common.config import resolvers as _resolvers  # noqa: F401  (registers OmegaConf resolvers once)

# faiss' loader logs, at INFO, every CPU-specific library it fails to find before the one it loads; under Hydra's
# INFO logging that reads like an error in every run. Keep its warnings.
_logging.getLogger("faiss.loader").setLevel(_logging.WARNING)
