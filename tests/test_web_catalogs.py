"""The pages' message catalogs (control/web/i18n/<lang>/<name>.json): every language has the same
catalogs and keys, no text is empty, placeholders agree, and every key a page names exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

WEB = Path(__file__).parent.parent / "control" / "web"
I18N = WEB / "i18n"
LANGS = ("zh-CN", "en")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Chinese punctuation (、：（）) reads as Chinese too: a list separator is no untranslated text
_CHINESE = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")


def _catalog(lang: str, name: str) -> dict[str, str]:
    data = json.loads((I18N / lang / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


def _names(lang: str) -> set[str]:
    return {p.stem for p in (I18N / lang).glob("*.json")}


def test_every_language_has_the_same_catalogs_and_keys() -> None:
    names = _names("zh-CN")
    assert "common" in names
    for lang in LANGS:
        assert _names(lang) == names, lang
    for name in sorted(names):
        zh, en = _catalog("zh-CN", name), _catalog("en", name)
        assert set(zh) == set(en), (name, set(zh) ^ set(en))
        for key in zh:
            assert zh[key].strip() and en[key].strip(), (name, key)
            assert set(_PLACEHOLDER.findall(zh[key])) == set(_PLACEHOLDER.findall(en[key])), key


def test_chinese_catalog_is_chinese() -> None:
    for name in sorted(_names("zh-CN")):
        zh = _catalog("zh-CN", name)
        latin_only = [k for k, v in zh.items() if not _CHINESE.search(v) and k != "lang.switch"]
        # a few texts may be codes or names (e.g. "PDF"); most must read as Chinese
        assert len(latin_only) <= max(2, len(zh) // 20), (name, latin_only)


def test_keys_named_by_pages_exist() -> None:
    keys: set[str] = set()
    for name in _names("zh-CN"):
        keys |= set(_catalog("zh-CN", name))
    attr = re.compile(r'data-i18n(?:-[a-z-]+)?="([^"]+)"')
    call = re.compile(r"""\bt\(\s*["']([\w.\-]+)["']""")
    missing = []
    for page in sorted(WEB.glob("*.html")) + sorted(WEB.glob("*.js")):
        if page.name == "i18n.js":
            continue  # the loader itself (its comments show the syntax)
        text = page.read_text(encoding="utf-8")
        for key in attr.findall(text) + call.findall(text):
            if key not in keys:
                missing.append((page.name, key))
    assert not missing, missing
