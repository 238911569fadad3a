"""The mediation draft's checks and texts (control/mediation/store.py), and the library's rule
that a refused box on a 调解书 is no agreement (documents/verify.py), without a server."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from control.mediation.store import DraftError, check_draft, draft_texts, yuan
from documents.render import render
from documents.samples import sample
from documents.templates import load_templates
from documents.verify import document_state

TODAY = date(2026, 12, 1)


def people() -> list[dict[str, Any]]:
    base = {"left_at": None, "counts": True, "attorney_status": None}
    return [
        base | {"id": 1, "side": 10, "kind": "party", "name": "张三"},
        base | {"id": 2, "side": 20, "kind": "party", "name": "李四"},
        base | {"id": 3, "side": 30, "kind": "party", "name": "王五"},
        base | {"id": 4, "side": 10, "kind": "insurer", "name": "人保财险"},
        base
        | {"id": 5, "side": 20, "kind": "agent", "name": "赵律师", "attorney_status": "accepted"},
    ]


def item(**change: Any) -> dict[str, Any]:
    return {
        "what": "医疗费",
        "amount": "1234.5",
        "payer": 4,
        "payee": 2,
        "method": "转账",
        "due": "2026-12-20",
    } | change


def draft(**change: Any) -> dict[str, Any]:
    return {
        "losses": "医疗费",
        "items": [item()],
        "shares": [
            {"side": 10, "percent": "33.33"},
            {"side": 20, "percent": "33.33"},
            {"side": 30, "percent": "33.34"},
        ],
    } | change


def test_amounts_are_exact_and_shares_add_up_to_exactly_100() -> None:
    stored = check_draft(draft(), people(), TODAY)
    assert stored["items"][0]["amount_fen"] == 123450
    assert [s["percent"] for s in stored["shares"]] == ["33.33", "33.33", "33.34"]
    assert check_draft(draft(items=[item(amount=None, amount_fen=1)]), people(), TODAY)
    texts = draft_texts(stored, people())
    assert "人保财险于2026年12月20日前以转账方式向李四支付人民币1,234.50元" in texts["payment"]
    assert texts["shares"] == "张三承担33.33%；李四承担33.33%；王五承担33.34%"
    assert yuan(100000001) == "人民币1,000,000.01元"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"items": [item(amount="-1")]}, "items[0].amount"),
        ({"items": [item(amount="0")]}, "items[0].amount"),
        ({"items": [item(amount="1.234")]}, "items[0].amount"),
        ({"items": [item(amount=12.5)]}, "items[0].amount"),  # a float is not exact
        ({"items": [item(amount=None, amount_fen=-5)]}, "items[0].amount"),
        ({"items": [item(amount=None, amount_fen=1.5)]}, "items[0].amount_fen"),
        ({"items": [item(due="2026-12-01")]}, "items[0].due"),
        ({"items": [item(due="2026-13-01")]}, "items[0].due"),
        ({"items": [item(payer=5)]}, "items[0].payer"),  # an agent pays nobody
        ({"items": [item(payee=4)]}, "items[0].payee"),  # an insurer is paid nothing
        ({"items": [item(payer=1, payee=1)]}, "items[0].payee"),
        ({"items": [item(payer=4, payee=1)]}, "items[0].payee"),  # the same side
        ({"items": []}, "items"),
        ({"shares": [{"side": 10, "percent": "100.01"}]}, "shares[0].percent"),
        ({"shares": [{"side": 10, "percent": "60"}, {"side": 20, "percent": "39.99"}]}, "shares"),
        (
            {"shares": [{"side": 10, "percent": "50"}, {"side": 10, "percent": "50"}]},
            "shares[1].side",
        ),
        ({"shares": [{"side": 99, "percent": "100"}]}, "shares[0].side"),
        ({"losses": ""}, "draft.losses"),
    ],
)
def test_a_wrong_draft_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(DraftError) as caught:
        check_draft(draft(**change), people(), TODAY)
    assert caught.value.field == field
    assert " / " in str(caught.value)  # Chinese first, then English


def test_a_refused_box_on_an_agreement_is_never_in_effect() -> None:
    templates = load_templates()
    data = sample("mediation_agreement")
    data["refusals"] = [{"signer_id": "p2", "name": "李四", "reason": "不同意", "time": "10:00"}]
    drawn = render(templates["mediation_agreement"], data, "调〔2026〕第0001号")
    state = document_state(drawn.pdf)
    assert state.refused == ["party-p2"]
    assert not state.effective
    # the same refusal elsewhere stops a box being needed (it is printed on the document)
    notice = sample("penalty_notice")
    notice["refusals"] = [{"signer_id": "p1", "name": "张三", "reason": "不认可", "time": "10:00"}]
    other = document_state(render(templates["penalty_notice"], notice, "告〔2026〕第0002号").pdf)
    assert other.refused == ["party-p1"] and other.missing  # the officer has not signed yet
