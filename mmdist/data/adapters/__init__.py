"""Layout adapters: index a public dataset folder, exactly as its publisher lays it out, into
a list of ``Record`` (mmdist.data.records). Nothing is decoded here; structural problems (a
missing folder, an empty class, a CSV row naming a missing file, an unknown label, a mask without
its image) raise ``DatasetError`` naming the folder, row or file.

``index_dataset(name, src, **options)`` dispatches on the dataset name:

=========== =====================================================================================
kermany     ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``; patient from the name
jsrt        JSRT ``*.IMG`` (2048^2, 12-bit raw) + SCR ``left lung``/``right lung`` ``*.gif`` masks
montgomery  ``CXR_png/*.png`` + ``ManualMask/{leftMask,rightMask}/*.png``
shenzhen    ``CXR_png/*.png`` + a ``mask(s)/`` folder (``<stem>.png`` or ``<stem>_mask.png``)
nih         ``images*/**/*.png`` + ``Data_Entry_2017*.csv`` (No Finding vs Pneumonia by default)
csv         a ``labels.csv`` (columns image, label, mask, left_mask, right_mask, patient)
folder      every image under a folder, as an unlabeled pool
=========== =====================================================================================
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from mmdist.data.adapters.common import Index
from mmdist.data.adapters.folder import index_folder
from mmdist.data.adapters.jsrt import index_jsrt
from mmdist.data.adapters.kermany import index_kermany
from mmdist.data.adapters.lungmasks import index_montgomery, index_shenzhen
from mmdist.data.adapters.manifest_csv import index_csv
from mmdist.data.adapters.nih import index_nih
from mmdist.data.records import DatasetError

ADAPTERS: dict[str, Callable[..., Index]] = {
    "kermany": index_kermany,
    "jsrt": index_jsrt,
    "montgomery": index_montgomery,
    "shenzhen": index_shenzhen,
    "nih": index_nih,
    "csv": index_csv,
    "folder": index_folder,
}


def index_dataset(name: str, src: str | Path, **options) -> Index:
    """Index the dataset at ``src`` with the adapter ``name``; options are adapter keywords."""
    if name not in ADAPTERS:
        raise DatasetError(f"unknown dataset kind {name!r}; choose one of {sorted(ADAPTERS)}")
    adapter = ADAPTERS[name]
    accepted = set(inspect.signature(adapter).parameters) - {"src"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DatasetError(f"dataset {name!r}: unknown option(s) {unknown}; "
                           f"this adapter takes {sorted(accepted) or 'none'}")
    src = Path(src)
    if not src.exists():
        raise DatasetError(f"{name}: dataset path {src} does not exist")
    return adapter(src, **options)


__all__ = ["ADAPTERS", "Index", "index_dataset"]
