"""Read the manifest (kind, number, required signatures) embedded in a rendered document.

It is read from the document's **first revision**, the one rendered before any signature, so a
later incremental update that swapped the attachment cannot drop a required signer.
"""

from __future__ import annotations

import json
from typing import Any

from pyhanko.pdf_utils.generic import ArrayObject, DictionaryObject
from pyhanko.pdf_utils.reader import PdfFileReader

from .errors import DocumentError
from .render import MANIFEST_FORMAT, MANIFEST_NAME


def _names(tree: Any) -> list[Any]:
    out: list[Any] = []
    if not isinstance(tree, DictionaryObject):
        return out
    if "/Names" in tree:
        arr = tree["/Names"]
        if isinstance(arr, ArrayObject):
            out.extend(arr)
    for kid in tree.get("/Kids", []):
        out.extend(_names(kid.get_object()))
    return out


def read_manifest(reader: PdfFileReader, revision: int = 0) -> dict[str, Any]:
    root = reader.get_historical_root(revision) if revision >= 0 else reader.root
    try:
        tree = root["/Names"]["/EmbeddedFiles"]
        flat = _names(tree.get_object() if hasattr(tree, "get_object") else tree)
    except KeyError:
        flat = []
    for i in range(0, len(flat) - 1, 2):
        if str(flat[i]) == MANIFEST_NAME:
            spec = flat[i + 1].get_object()
            data = spec["/EF"]["/F"].get_object().data
            manifest: dict[str, Any] = json.loads(data.decode("utf-8"))
            if manifest.get("format") != MANIFEST_FORMAT:
                break
            return manifest
    raise DocumentError(
        f"文件中没有本系统的文书清单（{MANIFEST_NAME}）/ the PDF carries no "
        f"document manifest ({MANIFEST_NAME})"
    )
