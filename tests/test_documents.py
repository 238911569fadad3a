"""Document library: templates, field checks, numbering, PDF/A rendering (real PDFs)."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from documents import (
    MANIFEST_NAME,
    MissingFields,
    NumberingError,
    NumberStore,
    TemplateError,
    load_templates,
    render,
)
from documents.samples import sample
from documents.templates import parse_template

TEMPLATES = load_templates()
KINDS = {
    "inquiry_record",
    "determination_simple",
    "determination_ordinary",
    "accident_certificate",
    "mediation_agreement",
    "mediation_termination",
    "penalty_notice",
    "penalty_decision",
    "delivery_consent",
    "delivery_receipt",
    "talk_record",
    "education_attendance",
    "education_certificate",
}


def test_every_kind_has_a_template() -> None:
    assert set(TEMPLATES) == KINDS


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_renders_to_pdfa_with_embedded_chinese_font(kind: str) -> None:
    t = TEMPLATES[kind]
    doc = render(t, sample(kind), f"某公交{t.short}〔2026〕第0001号")
    pdf = doc.pdf
    assert pdf.startswith(b"%PDF-1.7")
    # PDF/A identification in the XMP metadata, an output intent, the font program embedded
    assert b"<pdfaid:part>3</pdfaid:part>" in pdf and b"<pdfaid:conformance>B" in pdf
    assert b"/OutputIntents" in pdf and b"/FontFile2" in pdf
    document = pdfium.PdfDocument(pdf)
    try:
        text = "".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
        n = len(document)
    finally:
        document.close()
    assert t.title in text and "〔2026〕第0001号" in text
    assert f"第 1 页 共 {n} 页" in text
    assert doc.manifest["kind"] == kind and doc.manifest["pages"] == n
    # every required signature has a box on a page of the document
    assert doc.required and all(1 <= r.page <= n for r in doc.required)
    # the manifest is embedded as an associated file
    assert MANIFEST_NAME.encode() in pdf and b"/AFRelationship /Data" in pdf


def test_inquiry_record_has_turns_with_time_and_offset_and_a_slot_on_every_page() -> None:
    data = sample("inquiry_record")
    data["turns"] = [
        {"q": f"第{i}个问题？", "a": "回答。" * 30, "time": f"09:{i:02d}:00", "offset": 60 * i}
        for i in range(40)
    ]
    doc = render(TEMPLATES["inquiry_record"], data, "询〔2026〕第0002号")
    pages = doc.manifest["pages"]
    assert pages >= 3
    party = [r for r in doc.required if r.role == "party"]
    assert [r.page for r in party] == list(range(1, pages + 1))
    document = pdfium.PdfDocument(doc.pdf)
    try:
        first = document[0].get_textpage().get_text_range()
        last = document[pages - 1].get_textpage().get_text_range()
    finally:
        document.close()
    assert "问（09:00:00，录像 0:00:00）" in first and "被询问人签名" in first
    assert "以上笔录我看过，和我说的相符" in last and "询问人" in last


def test_refusal_to_sign_is_printed_and_not_required() -> None:
    data = sample("inquiry_record")
    data["refusals"] = [
        {
            "signer_id": "p1",
            "name": "张三",
            "reason": "对记录有异议",
            "time": "10:06",
            "recorded_by": "李警官",
        }
    ]
    doc = render(TEMPLATES["inquiry_record"], data, "")
    party = [r for r in doc.required if r.role == "party"]
    assert party and all(r.refused and "拒绝签名" in r.refused for r in party)
    document = pdfium.PdfDocument(doc.pdf)
    try:
        assert "张三拒绝签名" in document[0].get_textpage().get_text_range()
    finally:
        document.close()


def test_determination_without_a_partys_responsibility_is_refused() -> None:
    data = sample("determination_ordinary")
    del data["parties"][1]["responsibility"]
    with pytest.raises(MissingFields) as exc:
        render(TEMPLATES["determination_ordinary"], data)
    assert exc.value.missing == [("parties[1].responsibility", "第2项的当事人责任")]
    assert str(exc.value).startswith("道路交通事故认定书缺少必填字段：第2项的当事人责任")


def test_penalty_decision_without_legal_basis_is_refused() -> None:
    data = sample("penalty_decision")
    data["penalty"]["legal_basis"] = "  "
    with pytest.raises(MissingFields, match=r"法律依据（penalty\.legal_basis）"):
        render(TEMPLATES["penalty_decision"], data)


def test_inquiry_record_without_turns_names_the_list() -> None:
    data = sample("inquiry_record")
    data["turns"] = []
    with pytest.raises(MissingFields) as exc:
        render(TEMPLATES["inquiry_record"], data)
    assert ("turns", "问") in exc.value.missing


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            'kind = "x"\ntitle = "t"\nshort = "s"\nsigners = []\nbody = [{type="signatures"}]',
            "signers",
        ),
        (
            'kind = "x"\ntitle = "t"\nshort = "s"\nsigners = [{role="boss", who="officers.0", '
            'label="l"}]\nbody = [{type="signatures"}]',
            "signers[0].role",
        ),
        (
            'kind = "x"\ntitle = "t"\nshort = "s"\nsigners = [{role="officer", who="officers.0", '
            'label="l"}]\nbody = [{type="line", text="{case.place"}, {type="signatures"}]',
            "body[0].text",
        ),
        (
            'kind = "x"\ntitle = "t"\nshort = "s"\nsigners = [{role="officer", who="officers.0", '
            'label="l"}]\nbody = [{type="line", text="{secret.key}"}, {type="signatures"}]',
            "body[0].text",
        ),
        (
            'kind = "x"\ntitle = "t"\nshort = "s"\nsigners = [{role="officer", who="officers.0", '
            'label="l"}]\nbody = [{type="line", text="a"}]',
            "body",
        ),
        ('kind = "x"\ntitle = "t"\nsigners = []', "short"),
        ('kind = "x" = 1', "TOML"),
    ],
)
def test_template_validator_names_the_problem(text: str, where: str) -> None:
    with pytest.raises(TemplateError) as exc:
        parse_template(text, "bad.toml")
    assert f"模板 bad.toml 的 {where}：" in str(exc.value)
    assert " / template bad.toml" in str(exc.value)


def test_brigade_template_directory(tmp_path: Path) -> None:
    src = (Path(__file__).parents[1] / "documents" / "templates" / "talk_record.toml").read_text()
    (tmp_path / "talk_record.toml").write_text(src.replace("约谈记录", "安全约谈记录"))
    own = load_templates(tmp_path)
    assert own["talk_record"].title == "安全约谈记录"
    (tmp_path / "copy.toml").write_text(src)
    with pytest.raises(TemplateError, match="重复"):
        load_templates(tmp_path)


def test_numbers_are_sequential_per_brigade_kind_and_year(tmp_path: Path) -> None:
    store = NumberStore(tmp_path / "n.db")
    try:
        a = store.take("B01", "penalty_decision", 2026, "罚", "某公交")
        b = store.take("B01", "penalty_decision", 2026, "罚", "某公交")
        other = store.take("B02", "penalty_decision", 2026, "罚")
        year = store.take("B01", "penalty_decision", 2027, "罚")
        assert (a.text, b.text) == ("某公交罚〔2026〕第0001号", "某公交罚〔2026〕第0002号")
        assert other.seq == 1 and year.seq == 1
        voided = store.void("B01", "penalty_decision", 2026, 2, "文书内容有误，重新制作")
        assert voided.status == "voided" and voided.void_reason
        # a voided number is never given again, and stays listed
        assert store.take("B01", "penalty_decision", 2026, "罚").seq == 3
        assert [n.status for n in store.numbers("B01", "penalty_decision", 2026)] == [
            "taken",
            "voided",
            "taken",
        ]
        assert store.gaps("B01", "penalty_decision", 2026) == []
        with pytest.raises(NumberingError, match="已作废"):
            store.void("B01", "penalty_decision", 2026, 2, "again")
        with pytest.raises(NumberingError, match="理由"):
            store.void("B01", "penalty_decision", 2026, 1, " ")
    finally:
        store.close()
        store.close()


def _take_many(path: str, n: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = NumberStore(Path(path))
    try:
        queue.put([store.take("B01", "inquiry_record", 2026, "询").seq for _ in range(n)])
    finally:
        store.close()


def test_two_processes_never_take_the_same_number(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    NumberStore(db).close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_take_many, args=(str(db), 40, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=60), queue.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    seqs = got[0] + got[1]
    assert sorted(seqs) == list(range(1, 81))
    assert all(a < b for a, b in zip(got[0], got[0][1:], strict=False))


def test_manifest_matches_the_data() -> None:
    doc = render(
        TEMPLATES["mediation_agreement"], sample("mediation_agreement"), "调〔2026〕第0001号"
    )
    m = doc.manifest
    assert json.loads(json.dumps(m)) == m
    assert [r["field"] for r in m["required_signatures"]] == [
        "party-p1",
        "party-p2",
        "party-p3",
        "officer-o1",
    ]
    assert re.fullmatch(r"[0-9a-f]{64}", m["data_sha256"])


def test_inquiry_record_written_during_the_call_reviewed_and_corrected() -> None:
    from datetime import UTC, datetime, timedelta

    from documents.record import InquiryRecord, RecordError

    start = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    rec = InquiryRecord(start)
    v1 = rec.add_turn("你的车速是多少？", "大约八十。", start + timedelta(seconds=95))
    v2 = rec.add_turn("前车是否有刹车灯？", "有。", start + timedelta(minutes=4, seconds=10))
    assert (v1.version, v2.version) == (1, 2) and v1.sha256 != v2.sha256
    rec.edit_turn(1, a="大约九十。")  # while writing: free edits, each a version
    rec.start_review()
    with pytest.raises(RecordError, match="更正"):
        rec.edit_turn(2, a="没有。")
    with pytest.raises(RecordError, match="审阅开始后"):
        rec.add_turn("q", "a", start + timedelta(minutes=9))
    rec.correct(2, "a", "有，但亮得很晚。", asked_by="p1", at=start + timedelta(minutes=30))
    rec.correct(1, "q", "你当时的车速是多少？", asked_by="p1", at=start + timedelta(minutes=31))
    with pytest.raises(RecordError, match="未确认的更正：1、2"):
        rec.finalise()
    rec.answer_correction(1, True, start + timedelta(minutes=32))
    rec.answer_correction(2, False, start + timedelta(minutes=32))  # the text goes back
    with pytest.raises(RecordError, match="已处理"):
        rec.answer_correction(2, True, start + timedelta(minutes=33))
    final = rec.finalise()
    again = InquiryRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert again.snapshot() == final  # what the custody log hashed can be recomputed
    data = rec.document_data(sample("inquiry_record"))
    assert data["turns"][0] == {
        "q": "你的车速是多少？",
        "a": "大约九十。",
        "time": "09:31:35",
        "offset": 95.0,
    }
    assert data["turns"][1]["a"] == "有，但亮得很晚。"
    doc = render(TEMPLATES["inquiry_record"], data, "询〔2026〕第0003号")
    document = pdfium.PdfDocument(doc.pdf)
    try:
        text = document[0].get_textpage().get_text_range()
    finally:
        document.close()
    assert "问（09:34:10，录像 0:04:10）" in text
    flat = text.replace("\r\n", "")  # a long line wraps
    assert "由“有。”改为“有，但亮得很晚。”，被询问人已确认" in flat
    assert "被询问人未确认，未采纳" in flat


def test_missing_font_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from documents import FontMissing, fonts

    monkeypatch.setattr(fonts, "CANDIDATES", (("/nonexistent/font.ttc", 0),))
    with pytest.raises(FontMissing, match="fonts-wqy-zenhei"):
        render(TEMPLATES["talk_record"], sample("talk_record"))
    with pytest.raises(FontMissing, match="不存在"):
        fonts.find_cjk_font(Path("/nonexistent/other.ttf"))
