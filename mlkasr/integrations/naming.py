"""How MAN is named in other tools' catalogues (spandrel's tags, OpenModelDB's ``size``): one place for both."""

from __future__ import annotations

from ..models.man import ModelSpec

ARCHITECTURE_NAME = "MAN"  # spandrel's architecture id and display name
OPENMODELDB_ARCHITECTURE = "man"  # OpenModelDB's architecture id (lower case, dashes)


def size_tags(spec: ModelSpec) -> list[str]:
    """Width, depth and ablations as short tags (``["48nf", "5nb"]``), the convention spandrel's architectures and
    OpenModelDB's ``size`` field use (``64nf``, ``23nb`` for ESRGAN)."""
    return [f"{spec.n_feats}nf", f"{spec.n_resblocks}nb", *spec.ablations.tags()]
