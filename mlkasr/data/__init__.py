"""Training data: preparing DIV2K-style sets (sub-images, LR, LMDB, checks) and the paired patch loader.

Preparation (``mlkasr prepare``): ``extract_subimages``, ``generate_lr``, ``pack_folder``, ``check_lmdb``,
``prepare_div2k``. Training: a ``PatchSource`` (``LmdbPairSource``, ``FolderPairSource``, ``HrOnlySource``) in a
``PairedPatchDataset``, read through ``build_loader`` / ``DrawSampler`` for exact resume and DDP sharding.
"""

from .check import CheckReport, LmdbInspection, check_inspected, check_lmdb, inspect_lmdb
from .dataset import Draw, PairedPatchDataset
from .div2k import Div2kReport, prepare_div2k
from .errors import DataError
from .extract import LrCut, SubImageReport, extract_subimages
from .lmdb_store import LmdbImageReader, LmdbWriter, MetaEntry, read_meta_info
from .loader import DrawSampler, build_loader
from .lr import generate_lr
from .pack import PackReport, pack_folder
from .sources import FolderPairSource, HrOnlySource, LmdbPairSource, PatchSource, SourceItem
from .subimages import SubImageGrid, Window, grid_windows, window_starts

__all__ = [
    "CheckReport", "LmdbInspection", "check_inspected", "inspect_lmdb", "DataError", "Div2kReport", "Draw", "DrawSampler", "FolderPairSource", "HrOnlySource",
    "LmdbImageReader", "LmdbPairSource", "LmdbWriter", "LrCut", "MetaEntry", "PackReport", "PairedPatchDataset",
    "PatchSource", "SourceItem", "SubImageGrid", "SubImageReport", "Window", "build_loader", "check_lmdb",
    "extract_subimages", "generate_lr", "grid_windows", "pack_folder", "prepare_div2k", "read_meta_info",
    "window_starts",
]
