"""The document library: templates, rendering, numbering, signing and validation of the legal
documents of a case. No HTTP here: ``control/`` and the CLI are thin layers over it.

See docs/documents.md.
"""

from .errors import (
    CAError,
    DocumentError,
    FontMissing,
    MissingFields,
    NumberingError,
    SigningError,
    TemplateError,
)
from .numbering import DocumentNumber, NumberStore, format_number
from .render import MANIFEST_NAME, RenderedDocument, RequiredSignature, render
from .templates import Template, load_templates

__all__ = [
    "MANIFEST_NAME",
    "CAError",
    "DocumentError",
    "DocumentNumber",
    "FontMissing",
    "MissingFields",
    "NumberStore",
    "NumberingError",
    "RenderedDocument",
    "RequiredSignature",
    "SigningError",
    "Template",
    "TemplateError",
    "format_number",
    "load_templates",
    "render",
]
