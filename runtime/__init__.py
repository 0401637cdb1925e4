"""draftwise's synchronous core: models, caches, sampling and speculative rounds."""

from draftwise.runtime.blas import preload_openblas

# Before anything imports mlx: see draftwise.runtime.blas.
preload_openblas()
