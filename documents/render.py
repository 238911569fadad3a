"""Render a template and case data to PDF/A-3b with an embedded Chinese TrueType font.

The PDF carries, as a PDF/A-3 associated file named :data:`MANIFEST_NAME`, a JSON manifest:
the kind, number, the hash of the data it was made from, and every required signature (field
name, role, signer, page, box). The verifier reads it to tell which signatures are missing, so
an outsider needs nothing but the PDF and the root certificate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import OutputIntentSubType
from fpdf.output import PDFICCProfile
from PIL import ImageCms

from .fonts import find_cjk_font
from .model import Data, resolve
from .templates import PLACEHOLDER, SignerSpec, Template

# fontTools drops the bitmap (BDF) table of WenQuanYi when subsetting and says so on every
# document; the outlines, which are what is embedded, are unaffected.
logging.getLogger("fontTools.subset").setLevel(logging.ERROR)

MANIFEST_NAME = "remotecase-document.json"
MANIFEST_FORMAT = "remotecase-document/1"
MM = 72 / 25.4  # PDF points per millimetre
SLOT_W, SLOT_H = 48.0, 16.0  # a signature box, mm
SEAL_BOX = 40.0  # the seal's box: an official seal is about 40 mm across


@dataclass(frozen=True)
class RequiredSignature:
    field: str  # the PDF signature field's name
    role: str  # party | officer | seal
    signer_id: str
    name: str
    label: str
    page: int  # 1-based
    box: tuple[float, float, float, float]  # PDF points, (x1, y1, x2, y2) from bottom-left
    refused: str | None = None  # the refusal note, when the signer refused

    def as_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "role": self.role,
            "signer_id": self.signer_id,
            "name": self.name,
            "label": self.label,
            "page": self.page,
            "box": list(self.box),
            "refused": self.refused,
        }


@dataclass
class RenderedDocument:
    pdf: bytes
    manifest: dict[str, Any]
    required: list[RequiredSignature] = field(default_factory=list)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, list):
        return "；".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "；".join(f"{k}：{_fmt(v)}" for k, v in value.items())
    return str(value)


def fill(text: str, ctx: Mapping[str, Any]) -> tuple[str, bool]:
    """The text with placeholders replaced; and whether every placeholder had a value."""
    complete = True

    def sub(m: re.Match[str]) -> str:
        nonlocal complete
        v = resolve(ctx, m.group(1))
        if v is None or v == "":
            complete = False
        return _fmt(v)

    return PLACEHOLDER.sub(sub, text), complete


def offset_text(offset: Any) -> str:
    """A recording offset (seconds, or already text) as H:MM:SS."""
    if isinstance(offset, int | float):
        s = int(offset)
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return str(offset)


def _signers_of(spec: SignerSpec, data: Data) -> list[tuple[str, str]]:
    """(signer_id, name) for each person the spec names."""
    if spec.who == "department":
        dep = data.get("department", {})
        return [("department", str(dep.get("seal_name") or dep.get("name", "")))]
    if spec.who.endswith("[]"):
        people = data.get(spec.who[:-2]) or []
    else:
        one = resolve(data, spec.who)
        people = [one] if one is not None else []
    out = []
    for i, p in enumerate(people):
        pid = str(p.get("id") or f"{spec.who.split('.')[0].rstrip('[]')}{i}")
        out.append((pid, str(p.get("name", ""))))
    return out


def _field_name(role: str, signer_id: str, page: int | None) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", signer_id)
    return f"{role}-{safe}" + (f"-p{page}" if page else "")


class _Pdf(FPDF):
    def __init__(self, doc: _Layout) -> None:
        super().__init__(format="A4", enforce_compliance="PDF/A-3B")
        self._doc = doc

    def footer(self) -> None:
        self._doc.page_footer()


class _Layout:
    def __init__(self, template: Template, data: Data, number: str, font: Path | None) -> None:
        self.t, self.data, self.number = template, data, number
        self.refusals = {str(r.get("signer_id")): r for r in data.get("refusals") or []}
        path, index = find_cjk_font(font)
        self.pdf = _Pdf(self)
        self.pdf.add_font("zh", fname=str(path), collection_font_number=index)
        self.pdf.set_auto_page_break(True, margin=38)  # room for the per-page signature slots
        self.pdf.set_margins(20, 18, 20)
        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        self.pdf.add_output_intent(
            OutputIntentSubType.PDFA,
            "sRGB",
            registry_name="http://www.color.org",
            dest_output_profile=PDFICCProfile(contents=icc, n=3, alternate="DeviceRGB"),
            info="sRGB IEC61966-2.1",
        )
        self.required: list[RequiredSignature] = []
        self.every_page = [
            (s, who) for s in template.signers if s.every_page for who in _signers_of(s, data)
        ]

    def _box(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        ph = self.pdf.h
        return (
            round(x * MM, 2),
            round((ph - y - h) * MM, 2),
            round((x + w) * MM, 2),
            round((ph - y) * MM, 2),
        )

    def _require(
        self,
        spec: SignerSpec,
        who: tuple[str, str],
        page: int | None,
        x: float,
        y: float,
        on_page: int | None = None,
        size: tuple[float, float] = (SLOT_W, SLOT_H),
    ) -> None:
        signer_id, name = who
        refusal = self.refusals.get(signer_id)
        note = None
        if refusal is not None:
            note = f"{name}拒绝签名：{refusal.get('reason', '')}（{refusal.get('time', '')}）"
        self.required.append(
            RequiredSignature(
                _field_name(spec.role, signer_id, page),
                spec.role,
                signer_id,
                name,
                spec.label,
                on_page or self.pdf.page_no(),
                self._box(x, y, *size),
                note,
            )
        )

    def page_footer(self) -> None:
        pdf = self.pdf
        y = pdf.h - 34
        x = pdf.l_margin
        pdf.set_font("zh", size=9)
        for spec, _who in self.every_page:
            pdf.set_xy(x, y + 5)
            pdf.cell(24, 6, f"{spec.label}签名：")
            pdf.rect(x + 24, y, SLOT_W, SLOT_H)
            x += 24 + SLOT_W + 6
        pdf.set_xy(pdf.l_margin, pdf.h - 14)
        pdf.cell(0, 6, f"第 {pdf.page_no()} 页 共 {{nb}} 页", align="C")

    def every_page_slots(self) -> None:
        # The footer draws the same slots on every page; their boxes are known once the page
        # count is (the last footer is drawn only when the PDF is written).
        for page in range(1, self.pdf.pages_count + 1):
            x = self.pdf.l_margin
            for spec, who in self.every_page:
                self._require(spec, who, page, x + 24, self.pdf.h - 34, page)  # as the footer
                x += 24 + SLOT_W + 6

    def text_line(self, text: str, size: float = 11, align: str = "L") -> None:
        self.pdf.set_font("zh", size=size)
        self.pdf.multi_cell(0, 6.5, text, align=align, new_x="LMARGIN", new_y="NEXT")

    def render(self) -> None:
        pdf, data = self.pdf, self.data
        pdf.set_title(self.t.title)
        pdf.set_lang("zh-CN")
        pdf.set_author(str(resolve(data, "department.name") or ""))
        pdf.set_creator("remotecase documents")
        pdf.add_page()
        self.text_line(str(resolve(data, "department.name") or ""), 13, "C")
        self.text_line(self.t.title, 18, "C")
        if self.number:
            self.text_line(self.number, 11, "C")
        pdf.ln(3)
        ctx: dict[str, Any] = dict(data)
        ctx["number"] = self.number
        for block in self.t.body:
            kind = block["type"]
            if kind in ("line", "paragraph"):
                text, complete = fill(block["text"], ctx)
                if block.get("optional") and not complete:
                    continue
                self.text_line(text, align=block.get("align", "L"))
            elif kind == "each":
                if block.get("title"):
                    self.text_line(f"{block['title']}：")
                for item in data.get(block["over"]) or []:
                    for line in block["lines"]:
                        self.text_line("    " + fill(line, {**ctx, "item": item})[0])
            elif kind == "turns":
                for turn in data.get("turns") or []:
                    stamp = f"（{turn.get('time', '')}，录像 {offset_text(turn.get('offset'))}）"
                    self.text_line(f"问{stamp}：{_fmt(turn.get('q'))}")
                    self.text_line(f"答：{_fmt(turn.get('a'))}")
            elif kind == "corrections":
                status = {"confirmed": "被询问人已确认", "rejected": "被询问人未确认，未采纳"}
                for c in data.get("corrections") or []:
                    self.text_line(
                        f"更正：第{c.get('turn')}个问答的“{c.get('field')}”由“{c.get('before')}”"
                        f"改为“{c.get('after')}”，{status.get(str(c.get('status')), '')}。"
                    )
            elif kind == "refusals":
                for r in data.get("refusals") or []:
                    self.text_line(
                        f"拒绝签名记录：{r.get('name', r.get('signer_id'))}拒绝签名，理由："
                        f"{r.get('reason', '')}；时间：{r.get('time', '')}；"
                        f"记录人：{r.get('recorded_by', '')}"
                    )
            elif kind == "signatures":
                self._slots()

    def _slots(self) -> None:
        pdf = self.pdf
        slots = [
            (s, who)
            for s in self.t.signers
            if not s.every_page
            for who in _signers_of(s, self.data)
        ]
        pdf.ln(4)
        pdf.set_font("zh", size=10)
        # a flow: caption then box, left to right, a new row when the next does not fit
        x, y, row_h = pdf.l_margin, pdf.get_y(), 0.0
        for spec, who in slots:
            w, h = (SEAL_BOX, SEAL_BOX) if spec.role == "seal" else (SLOT_W, SLOT_H)
            caption = f"{spec.label}："
            cw = pdf.get_string_width(caption) + 2
            if x > pdf.l_margin and x + cw + w > pdf.w - pdf.r_margin:
                x, y, row_h = pdf.l_margin, y + row_h + 4, 0.0
            if y + h > pdf.page_break_trigger:
                pdf.add_page()
                pdf.set_font("zh", size=10)
                x, y, row_h = pdf.l_margin, pdf.get_y(), 0.0
            pdf.set_xy(x, y + h / 2 - 3)
            pdf.cell(cw, 6, caption)
            if spec.role != "seal":  # a seal is stamped without a frame
                pdf.rect(x + cw, y, w, h)
            self._require(spec, who, None, x + cw, y, size=(w, h))
            x += cw + w + 8
            row_h = max(row_h, h)
        pdf.set_xy(pdf.l_margin, y + row_h + 4)


def render(
    template: Template,
    data: Data,
    number: str = "",
    *,
    font: Path | None = None,
    created: datetime | None = None,
) -> RenderedDocument:
    """Check the data against the template, lay it out and return the PDF and its manifest.

    Blocking (font subsetting): call it in a thread from the event loop.
    """
    template.check(data)
    layout = _Layout(template, data, number, font)
    layout.render()
    layout.every_page_slots()
    canonical = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": template.kind,
        "title": template.title,
        "number": number,
        "department": resolve(data, "department.name"),
        "case_id": resolve(data, "case.id"),
        "data_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "created": (created or datetime.now(UTC)).isoformat(),
        "pages": layout.pdf.pages_count,
        "required_signatures": [r.as_json() for r in layout.required],
    }
    layout.pdf.embed_file(
        bytes=json.dumps(manifest, ensure_ascii=False, indent=1).encode(),
        basename=MANIFEST_NAME,
        mime_type="application/json",
        associated_file_relationship="Data",
        desc="文书清单与应签名 / manifest and required signatures",
    )
    return RenderedDocument(bytes(layout.pdf.output()), manifest, layout.required)
