"""Document templates: one TOML file per kind, checked when loaded.

A brigade adjusts wording, fields and signers by editing the files (or pointing the library at a
directory of its own); no code changes. :func:`load_templates` checks every file and raises
:class:`TemplateError` naming the file and the key at fault, so a bad edit stops the server at
start rather than at the first document.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import TemplateError
from .model import Data, check_fields

BLOCK_TYPES = {"line", "paragraph", "each", "turns", "corrections", "refusals", "signatures"}
ROLES = {"party", "officer", "seal"}
DATA_ROOTS = {
    "department",
    "case",
    "parties",
    "officers",
    "findings",
    "turns",
    "penalty",
    "mediation",
    "delivery",
    "talk",
    "number",
    "item",
    "refusals",
    "corrections",
}
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PATH_RE = re.compile(r"^[a-z_]+(\.[a-z0-9_]+)*$")
WHO_RE = re.compile(r"^(parties|officers)(\[\]|\.\d+)$|^department$")


@dataclass(frozen=True)
class SignerSpec:
    role: str  # party | officer | seal
    who: str  # parties[] (each party), parties.0, officers.1, department
    label: str  # the slot's caption, e.g. 被询问人
    every_page: bool = False


@dataclass(frozen=True)
class Template:
    kind: str
    title: str
    short: str
    numbered: bool
    fields: tuple[tuple[str, str], ...]  # (path, label)
    signers: tuple[SignerSpec, ...]
    body: tuple[dict[str, Any], ...]
    source: str
    # fields the body uses that a document may leave empty (``optional = true``): not
    # checked, but the officer's form asks for them too
    optional_fields: tuple[tuple[str, str], ...] = ()

    def check(self, data: Data) -> None:
        """Refuse data missing a required field (:class:`MissingFields` names each one)."""
        check_fields(self.title, data, list(self.fields))


def _fail(source: str, key: str, why_zh: str, why_en: str) -> TemplateError:
    return TemplateError(f"模板 {source} 的 {key}：{why_zh} / template {source}, {key}: {why_en}")


def _string(source: str, raw: dict[str, Any], key: str, where: str = "") -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(
            source, where + key, "缺少或不是非空字符串", "missing or not a non-empty string"
        )
    return value


def _check_text(source: str, key: str, text: str, allow_item: bool) -> None:
    if "{" in PLACEHOLDER.sub("", text) or "}" in PLACEHOLDER.sub("", text):
        raise _fail(source, key, "花括号不成对", "unbalanced braces")
    for ph in PLACEHOLDER.findall(text):
        root = ph.split(".")[0]
        if not PATH_RE.match(ph) or root not in DATA_ROOTS or (root == "item" and not allow_item):
            raise _fail(source, key, f"占位符 {{{ph}}} 无效", f"placeholder {{{ph}}} is not valid")


def parse_template(text: str, source: str) -> Template:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, "TOML", f"语法错误：{exc}", f"syntax error: {exc}") from None
    kind = _string(source, raw, "kind")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
        raise _fail(source, "kind", "只能用小写字母、数字和下划线", "lower-case letters, digits, _")
    title = _string(source, raw, "title")
    short = _string(source, raw, "short")
    numbered = raw.get("numbered", True)
    if not isinstance(numbered, bool):
        raise _fail(source, "numbered", "应为 true 或 false", "must be true or false")
    fields: list[tuple[str, str]] = []
    optional_fields: list[tuple[str, str]] = []
    for i, f in enumerate(raw.get("fields", [])):
        where = f"fields[{i}]."
        if not isinstance(f, dict):
            raise _fail(source, f"fields[{i}]", "应为表", "must be a table")
        path, label = _string(source, f, "path", where), _string(source, f, "label", where)
        if not re.fullmatch(r"[a-z_]+(\[\])?(\.[a-z0-9_]+(\[\])?)*", path):
            raise _fail(source, where + "path", f"路径 {path} 无效", f"path {path} is not valid")
        optional = f.get("optional", False)
        if not isinstance(optional, bool):
            raise _fail(source, where + "optional", "应为 true 或 false", "must be true or false")
        (optional_fields if optional else fields).append((path, label))
    signers: list[SignerSpec] = []
    raw_signers = raw.get("signers")
    if not isinstance(raw_signers, list) or not raw_signers:
        raise _fail(source, "signers", "至少需要一个签名人", "at least one signer is required")
    for i, s in enumerate(raw_signers):
        where = f"signers[{i}]."
        if not isinstance(s, dict):
            raise _fail(source, f"signers[{i}]", "应为表", "must be a table")
        role, who = _string(source, s, "role", where), _string(source, s, "who", where)
        if role not in ROLES:
            raise _fail(
                source,
                where + "role",
                f"未知角色 {role}（可用 party、officer、seal）",
                f"unknown role {role} (party, officer, seal)",
            )
        if not WHO_RE.match(who) or (role == "seal") != (who == "department"):
            raise _fail(source, where + "who", f"{who} 无效", f"{who} is not valid for {role}")
        every = s.get("every_page", False)
        if not isinstance(every, bool):
            raise _fail(source, where + "every_page", "应为 true 或 false", "must be a boolean")
        signers.append(SignerSpec(role, who, _string(source, s, "label", where), every))
    body: list[dict[str, Any]] = []
    raw_body = raw.get("body")
    if not isinstance(raw_body, list) or not raw_body:
        raise _fail(source, "body", "正文不能为空", "the body must not be empty")
    for i, b in enumerate(raw_body):
        where = f"body[{i}]"
        if not isinstance(b, dict) or b.get("type") not in BLOCK_TYPES:
            raise _fail(
                source,
                where + ".type",
                f"类型应为 {sorted(BLOCK_TYPES)} 之一",
                f"type must be one of {sorted(BLOCK_TYPES)}",
            )
        if b["type"] in ("line", "paragraph"):
            _check_text(source, where + ".text", _string(source, b, "text", where + "."), False)
            if b.get("align", "L") not in ("L", "C", "R"):
                raise _fail(source, where + ".align", "应为 L、C 或 R", "must be L, C or R")
        if b["type"] == "each":
            if b.get("over") not in ("parties", "officers"):
                raise _fail(
                    source,
                    where + ".over",
                    "应为 parties 或 officers",
                    "must be parties or officers",
                )
            lines = b.get("lines")
            if (
                not isinstance(lines, list)
                or not lines
                or not all(isinstance(x, str) for x in lines)
            ):
                raise _fail(source, where + ".lines", "应为字符串列表", "must be a list of strings")
            for j, line in enumerate(lines):
                _check_text(source, f"{where}.lines[{j}]", line, True)
        body.append(dict(b))
    if not any(b["type"] == "signatures" for b in body):
        raise _fail(
            source,
            "body",
            "缺少 signatures 块（签名位置）",
            "no signatures block (where the signature slots go)",
        )
    return Template(
        kind,
        title,
        short,
        numbered,
        tuple(fields),
        tuple(signers),
        tuple(body),
        source,
        tuple(optional_fields),
    )


def load_templates(directory: Path | None = None) -> dict[str, Template]:
    """Every ``*.toml`` in ``directory`` (default: the templates shipped with the package)."""
    out: dict[str, Template] = {}
    if directory is None:
        files = [
            (f.name, f.read_text("utf-8"))
            for f in resources.files("documents").joinpath("templates").iterdir()
            if f.name.endswith(".toml")
        ]
    else:
        if not directory.is_dir():
            raise TemplateError(f"模板目录不存在：{directory} / no template directory {directory}")
        files = [(p.name, p.read_text("utf-8")) for p in directory.glob("*.toml")]
    for name, text in sorted(files):
        template = parse_template(text, name)
        if template.kind in out:
            raise _fail(
                name,
                "kind",
                f"与 {out[template.kind].source} 重复",
                f"same kind as {out[template.kind].source}",
            )
        out[template.kind] = template
    if not out:
        raise TemplateError(f"没有模板文件：{directory} / no template files in {directory}")
    return out
