"""The templates as forms (GET /api/documents/templates): what the officer's form asks for is
exactly what the server still needs. A determination given only the fields the answer marks
as not filled by the case is made; without one of them it is refused, naming that field."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from control.documents.api import field_input, template_form
from documents.errors import TemplateError
from documents.templates import parse_template
from tests.conftest import Api, Server, case_with_party, officer_login


def _value(field: dict[str, Any]) -> str:
    return {"date": "2026年12月01日", "datetime": "2026年12月01日 10时30分"}.get(
        field["input"], f"{field['label']}的内容"
    )


def _body(fields: list[dict[str, Any]], party_ids: list[int], leave_out: str = "") -> Any:
    """The request the form builds: sections by path, one entry per party by its ID."""
    data: dict[str, Any] = {"parties": [{"id": pid} for pid in party_ids]}
    for f in fields:
        if f["filled"] or f["path"] == leave_out:
            continue
        parts = f["path"].split(".")
        if f["party"] is not None:
            targets = data["parties"] if f["party"] == "each" else [data["parties"][f["party"]]]
            parts = parts[1:] if f["party"] == "each" else parts[2:]
        else:
            targets = [data]
        for node in targets:
            for key in parts[:-1]:
                node = node.setdefault(key, {})
            node[parts[-1]] = _value(f)
    return data


async def test_the_form_asks_for_what_the_case_does_not_fill(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        await _check(server, Api(http, server.base_url))


async def _check(server: Server, api: Api) -> None:
    li = await officer_login(server, api)
    status, answer = await api.call("GET", "/api/documents/templates")
    assert status == 401, answer
    status, answer = await api.call("GET", "/api/documents/templates", li)
    assert status == 200, answer
    forms = {t["kind"]: t for t in answer["templates"]}
    assert {"determination_ordinary", "inquiry_record", "penalty_decision"} <= set(forms)
    form = forms["determination_ordinary"]
    assert form["title"] == "道路交通事故认定书"
    fields = {f["path"]: f for f in form["fields"]}
    assert fields["findings.facts"]["label"] == "事故经过"
    assert fields["findings.facts"]["input"] == "long"
    assert fields["case.issue_date"]["input"] == "date"
    assert fields["case.time"]["input"] == "datetime"
    assert fields["case.place"]["input"] == "text"
    assert fields["parties[].name"]["filled"] and fields["parties[].name"]["party"] == "each"
    assert not fields["parties[].responsibility"]["filled"]
    assert fields["parties[].responsibility"]["required"]
    assert fields["parties[].fault"]["required"] is False  # the template's optional field
    assert not fields["department.name"]["filled"]  # the case knows only the brigade's code
    assert fields["department.brigade"]["filled"]
    assert [s["label"] for s in form["signers"]] == ["交通警察", "交通事故处理专用章"]
    inquiry = {f["path"]: f for f in forms["inquiry_record"]["fields"]}
    assert inquiry["parties.0.birth_date"]["party"] == 0
    assert inquiry["parties.0.name"]["filled"] and not inquiry["officers.1.name"]["filled"]
    assert inquiry["officers.0.name"]["filled"]

    # two parties; the form's fields alone make the document
    case_id, first = await case_with_party(api, li, name="王伟")
    status, second = await api.call(
        "POST", f"/api/cases/{case_id}/parties", li, {"role": "driver", "name": "李娜"}
    )
    assert status == 201, second
    ids = [first, second["id"]]
    # who may be the case's officers (the recorder of a record, by account)
    await officer_login(server, api, "zhao", "brigade-1")
    await officer_login(server, api, "chen", "brigade-2")
    status, listed = await api.call("GET", f"/api/cases/{case_id}/officers", li)
    assert status == 200, listed
    assert [o["name"] for o in listed["officers"]] == ["li", "zhao"]
    status, listed = await api.call("GET", "/api/cases/999/officers", li)
    assert status == 404, listed
    url = f"/api/cases/{case_id}/documents"
    lacking = _body(form["fields"], ids, leave_out="parties[].responsibility")
    lacking["parties"][1]["responsibility"] = "次要责任"
    status, refused = await api.call(
        "POST", url, li, {"kind": "determination_ordinary", "data": lacking}
    )
    assert status == 422, refused
    assert refused["error"] == "missing_fields"
    assert [m["path"] for m in refused["missing"]] == ["parties[0].responsibility"]
    assert "当事人责任" in refused["missing"][0]["label"]
    status, doc = await api.call(
        "POST", url, li, {"kind": "determination_ordinary", "data": _body(form["fields"], ids)}
    )
    assert status == 201, doc
    status, pdf = await api.call("GET", f"{url}/{doc['id']}/pdf", li)
    assert status == 200 and pdf.startswith(b"%PDF")


def test_inputs_by_path() -> None:
    assert field_input("parties.0.birth_date") == "date"
    assert field_input("delivery.sent_at") == "datetime"
    assert field_input("penalty.legal_basis") == "long"
    assert field_input("mediation.date") == "date"
    assert field_input("talk.subject") == "text"
    assert field_input("parties[].vehicle.plate") == "text"


def test_an_optional_field_is_asked_but_not_checked() -> None:
    text = (
        'kind = "k"\ntitle = "某文书"\nshort = "某"\n'
        'fields = [{ path = "case.place", label = "地点" }, '
        '{ path = "case.note", label = "备注", optional = OPT }]\n'
        'signers = [{ role = "officer", who = "officers.0", label = "民警" }]\n'
        'body = [{ type = "line", text = "{case.place}{case.note}" }, { type = "signatures" }]\n'
    )
    template = parse_template(text.replace("OPT", "true"), "k.toml")
    assert template.fields == (("case.place", "地点"),)
    assert template.optional_fields == (("case.note", "备注"),)
    template.check({"case": {"place": "某地"}})  # the optional field may stay empty
    assert [f["required"] for f in template_form(template)["fields"]] == [True, False]
    with pytest.raises(TemplateError, match="optional"):
        parse_template(text.replace("OPT", '"yes"'), "k.toml")
