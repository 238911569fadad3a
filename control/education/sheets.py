"""Reading a roster file: CSV (UTF-8, with or without BOM, or GB18030 as Excel saves it in
China) or XLSX (openpyxl, read-only, values not formulas) into rows of text cells.

Blocking (an XLSX is a zip of XML): call :func:`read_table` in a thread. Bounded: at most
``MAX_ROWS`` rows and ``MAX_COLUMNS`` columns are read; more is an error, not a truncation.
"""

from __future__ import annotations

import csv
import datetime
import io

MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 5000
MAX_COLUMNS = 30
XLSX_MAGIC = b"PK\x03\x04"


class SheetError(Exception):
    """The file cannot be read as a table (the message is Chinese first, then English)."""


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a phone number typed into a number cell
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return str(value)


def _csv(data: bytes) -> list[list[str]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes any byte string but a few
        raise SheetError("文件编码无法识别（应为 UTF-8 或 GB18030）/ not UTF-8 or GB18030 text")
    if "\x00" in text:
        raise SheetError("文件不是文本表格（CSV）/ the file is not a CSV text table")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # type: ignore[assignment]
    table: list[list[str]] = []
    try:
        for row in csv.reader(io.StringIO(text), dialect):
            if len(table) >= MAX_ROWS + 1:
                raise SheetError(f"行数超过 {MAX_ROWS} / more than {MAX_ROWS} rows")
            if len(row) > MAX_COLUMNS:
                raise SheetError(
                    f"第 {len(table) + 1} 行超过 {MAX_COLUMNS} 列 / row {len(table) + 1} has "
                    f"more than {MAX_COLUMNS} columns"
                )
            table.append(row)
    except csv.Error as exc:
        raise SheetError(f"CSV 格式错误：{exc} / malformed CSV: {exc}") from None
    return table


def _xlsx(data: bytes) -> list[list[str]]:
    import openpyxl  # only an XLSX needs it

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # a zip that is no workbook fails in many ways inside openpyxl
        raise SheetError(f"XLSX 文件无法读取：{exc} / the XLSX file cannot be read") from None
    try:
        sheet = book.worksheets[0] if book.worksheets else None
        if sheet is None:
            raise SheetError("XLSX 文件没有工作表 / the XLSX file has no sheet")
        table: list[list[str]] = []
        for values in sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS + 1):
            if len(table) >= MAX_ROWS + 1:
                raise SheetError(f"行数超过 {MAX_ROWS} / more than {MAX_ROWS} rows")
            row = [_cell(v) for v in values]
            while row and not row[-1]:
                row.pop()
            if len(row) > MAX_COLUMNS:
                raise SheetError(
                    f"第 {len(table) + 1} 行超过 {MAX_COLUMNS} 列 / row {len(table) + 1} has "
                    f"more than {MAX_COLUMNS} columns"
                )
            table.append(row)
        return table
    except SheetError:
        raise
    except Exception as exc:  # a damaged sheet inside a sound zip
        raise SheetError(f"XLSX 文件无法读取：{exc} / the XLSX file cannot be read") from None
    finally:
        book.close()


def read_table(data: bytes) -> list[list[str]]:
    """The rows of a CSV or XLSX file (told apart by content, not by name)."""
    if not data:
        raise SheetError("文件为空 / the file is empty")
    if len(data) > MAX_BYTES:
        raise SheetError(f"文件超过 {MAX_BYTES} 字节 / the file exceeds {MAX_BYTES} bytes")
    if data.startswith(XLSX_MAGIC):
        return _xlsx(data)
    return _csv(data)
