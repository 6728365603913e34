"""Errors of the data pipeline. Each names the file, LMDB key or option at fault and what was expected."""

from __future__ import annotations

from ..errors import MlkasrError


class DataError(MlkasrError):
    """Training or preparation input that cannot be used as it is (bad key, size, record or folder)."""
