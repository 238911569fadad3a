"""The server's message catalogs (control/i18n): both languages have every text, every error the
code base can answer with has words in both, and a request gets them in its language."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp

import control
from control import i18n
from control.refusals import CodedRefusal

from .conftest import Api, Server, case_with_party, officer_login

ROOT = Path(__file__).parent.parent
_HAN = re.compile(r"[\u4e00-\u9fff]")


def test_both_catalogs_have_the_same_keys_and_placeholders() -> None:
    zh, en = i18n.catalog("zh-CN"), i18n.catalog("en")
    assert set(zh) == set(en), set(zh) ^ set(en)
    for key in zh:
        assert zh[key].strip() and en[key].strip(), key
        assert i18n.placeholders(zh[key]) == i18n.placeholders(en[key]), key
        # the Chinese catalog reads as Chinese (a text of names and placeholders only may not)
        words = re.sub(r"\{\w+\}|remotecase", "", zh[key])
        assert _HAN.search(zh[key]) or not re.search("[A-Za-z]", words), (key, zh[key])
        assert not _HAN.search(en[key]), (key, en[key])


def test_negotiation() -> None:
    assert i18n.negotiate(None) == "zh-CN"
    assert i18n.negotiate("") == "zh-CN"
    assert i18n.negotiate("fr-FR, de;q=0.8") == "zh-CN"  # neither: Chinese
    assert i18n.negotiate("en") == "en"
    assert i18n.negotiate("en-GB,en;q=0.9") == "en"
    assert i18n.negotiate("zh-TW") == "zh-CN"
    assert i18n.negotiate("fr, en;q=0.5, zh;q=0.4") == "en"
    assert i18n.negotiate("en;q=0.2, zh-CN;q=0.9") == "zh-CN"
    assert i18n.negotiate("en;q=0, *") == "zh-CN"
    assert i18n.negotiate(";;;, ,q=abc, en;q=x") == "zh-CN"  # malformed: the default


def test_one_string_texts_are_split() -> None:
    assert i18n.split("案件已结案 / the case is closed") == ("案件已结案", "the case is closed")
    # the cut is the first slash with Chinese before it and none after
    assert i18n.split("kind：未知（可用：a/b）/ unknown kind (a/b)") == (
        "kind：未知（可用：a/b）",
        "unknown kind (a/b)",
    )
    assert i18n.split("MP4/MOV / the file") is None  # no Chinese: one language
    # an English half may name a Chinese document
    text = "未签署送达地址确认书 / the consent to delivery (送达地址确认书) is not signed"
    assert i18n.split(text) == (
        "未签署送达地址确认书",
        "the consent to delivery (送达地址确认书) is not signed",
    )
    assert i18n.localize("只有中文", "en") == "只有中文"


def _modules() -> Iterator[str]:
    for info in pkgutil.walk_packages(control.__path__, "control."):
        yield info.name


def _refusals(cls: type[CodedRefusal]) -> Iterator[type[CodedRefusal]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _refusals(sub)


def test_every_refusal_has_words_in_both_languages() -> None:
    for name in _modules():
        importlib.import_module(name)
    seen = 0
    for cls in _refusals(CodedRefusal):
        for member in cls:
            seen += 1
            if i18n.has(member.key):
                continue
            assert i18n.split(member.message) is not None, (cls.__module__, member)
    assert seen >= 30


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_one_string(node: ast.expr) -> bool:
    """A ``"中文 / English"`` literal or f-string (its fixed parts)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return i18n.split(node.value) is not None
    if isinstance(node, ast.JoinedStr):
        fixed = "".join(str(v.value) if isinstance(v, ast.Constant) else "{x}" for v in node.values)
        return i18n.split(fixed) is not None
    return False


def test_every_error_the_code_base_answers_has_words_in_both_languages() -> None:
    missing: list[str] = []
    calls = 0
    for path in sorted((ROOT / "control").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in ("json_error", "_error") or len(node.args) < 2:
                continue
            calls += 1
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            message = node.args[2] if len(node.args) > 2 else None
            words = {k.arg: k.value for k in node.keywords if k.arg}
            code = _literal(node.args[1])
            key, detail = _literal(words.get("key")), _literal(words.get("detail"))
            if message is not None and not isinstance(message, (ast.Constant, ast.JoinedStr)):
                continue  # a text made elsewhere: checked below by its source
            if message is not None:
                if not _is_one_string(message):
                    missing.append(f"{where}: not 中文 / English")
                continue
            if ("key" in words and key is None) or ("detail" in words and detail is None):
                continue  # a computed key: checked below by its source
            wanted = key or (f"{code}.{detail}" if detail else code)
            if wanted is None or not i18n.has(wanted):
                missing.append(f"{where}: no catalog text for {wanted}")
    assert calls >= 80
    assert not missing, missing


def test_computed_keys_have_words() -> None:
    from control.sessions.invitations import _REDEEM_ERRORS

    for _, key, _ in _REDEEM_ERRORS.values():
        assert i18n.has(key), key
    # path_int(request, name, what): not_found.no_<what>
    whats = set()
    for path in (ROOT / "control").rglob("*.py"):
        whats |= set(re.findall(r'path_int\(\s*request,\s*"\w+",\s*"(\w+)"', path.read_text()))
    assert whats and all(i18n.has(f"not_found.no_{w}") for w in whats), whats
    # the enrolment refusals' codes (verifier/enrollment.py)
    codes = set(
        re.findall(r'EnrollmentRejected\(\s*"(\w+)"', (ROOT / "verifier/enrollment.py").read_text())
    )
    assert codes and all(i18n.has(f"enrollment.{c}") for c in codes), codes


async def test_an_answer_is_in_the_language_asked_for(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        # no Accept-Language: Chinese, and only Chinese
        status, body = await api.call("GET", "/api/cases")
        assert (status, body["error"], body["detail"]) == (401, "unauthorized", "no_token")
        assert body["message"] == "请先登录"
        status, body = await api.call("GET", "/api/cases", lang="en-US,en;q=0.9")
        assert body["message"] == "log in first"
        status, body = await api.call("GET", "/api/cases", lang="de")
        assert body["message"] == "请先登录"
        async with http.get(
            f"{server.base_url}/api/cases", headers={"Accept-Language": "en"}
        ) as response:
            assert response.headers["Content-Language"] == "en"
            assert "Accept-Language" in response.headers["Vary"]

        li = await officer_login(server, api)
        # a refusal: a specific detail under the shared code, words from the catalog
        status, body = await api.call("GET", "/api/cases/999999", li)
        assert (status, body["error"], body["detail"]) == (404, "not_found", "no_case"), body
        assert body["message"] == "没有该案件"
        status, body = await api.call("GET", "/api/cases/999999", li, lang="en")
        assert body["message"] == "no such case"
        # parameters are fields too
        status, body = await api.call("POST", "/api/cases", li, {"kind": "x", "title": "t"})
        assert status == 400 and body["field"] == "kind" and "accident" in body["allowed"]
        assert body["message"].startswith("kind：须为以下之一")
        # a text written "中文 / English" in code is served in one language
        cid, _ = await case_with_party(api, li)
        status, body = await api.call("GET", f"/api/cases/{cid}/records/999999", li)
        assert status == 404 and body["message"] == "没有该笔录", body
        status, body = await api.call("GET", f"/api/cases/{cid}/records/999999", li, lang="en")
        assert body["message"] == "no such record", body
        # bad JSON, worded by the outermost middleware
        async with http.post(
            f"{server.base_url}/api/login", data=b"{", headers={"Accept-Language": "en"}
        ) as response:
            body = await response.json()
            assert (body["error"], body["detail"]) == ("bad_json", "not_json")
            assert body["message"] == "the body is not JSON"
