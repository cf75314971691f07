"""The partseg chunk store: find raw cases, preprocess them, write and read a zarr v3 store.

``open_store(url)`` is the entry point for readers (re-exported as ``partseg.open_store``);
``partseg.store.ingest.ingest(src, store)`` builds a store from BraTS, MSD/nnU-Net, HDF5 or
NumPy data (``partseg ingest`` on the command line).

Example (needs a dataset on disk, so it is not run as a test)::

    from partseg.store import open_store
    store = open_store("data/brats.zarr")
    case = store[store.case_ids[0]]
    image, label = case.read(Box((0, 0, 0), (100, 116, 116)))
"""

from __future__ import annotations

from partseg.store.writer import StoreWriter, create_store
from partseg.store.zarrstore import DEFAULT_CHUNKS, Case, Store, open_store

__all__ = ["DEFAULT_CHUNKS", "Case", "Store", "StoreWriter", "create_store", "open_store"]
