"""Reading catalog CSV files: encoding, delimiter, header, typed values.

Pure Python, no database: `file_inspect` decides from the first megabyte whether a
file can be a catalog at all (and how to read it); `records_iter` then streams the
whole file record by record; `RowParser` turns one record into a `ProductIn` or a
list of reasons. Everything is streaming: memory does not grow with the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, BinaryIO, NamedTuple

# Fields up to config.process.CSV_FIELD_LIMIT (16 MB): each entry point sets it.

HEAD_BYTES = 1024 * 1024  # what file_inspect reads
SAMPLE_ROWS = 1000  # rows that decide a property column's type
PREVIEW_ROWS = 10

# --- Known columns ------------------------------------------------------------

FIELDS = (
    "product_id",
    "name",
    "categories",
    "price",
    "currency",
    "rating",
    "description",
    "image_url",
    "deeplink",
    "in_stock",
    "is_active",
)
_ALIASES: dict[str, tuple[str, ...]] = {
    "product_id": ("product_id", "id", "sku", "productid", "item_id", "itemid", "product_sku", "product_code"),
    "name": ("name", "title", "product_name", "productname", "item_name", "product_title"),
    "categories": ("categories", "category", "category_path", "product_category", "categories_path"),
    "price": ("price", "unit_price", "price_amount", "current_price"),
    "currency": ("currency", "currency_code", "price_currency"),
    "rating": ("rating", "avg_rating", "average_rating", "stars", "review_rating"),
    "description": ("description", "desc", "summary", "product_description", "long_description"),
    "image_url": ("image_url", "image", "image_link", "imageurl", "img", "image_src", "thumbnail", "thumbnail_url"),
    "deeplink": ("deeplink", "deep_link", "url", "link", "product_url", "web_url", "app_link"),
    "in_stock": ("in_stock", "instock", "stock", "available", "availability", "is_in_stock", "stock_status"),
    "is_active": ("is_active", "active", "enabled", "is_enabled"),
}
ALIASES: dict[str, str] = {alias: field for field, aliases in _ALIASES.items() for alias in aliases}

MAX_LENGTH = {
    "product_id": 255,
    "name": 500,
    "category": 255,
    "description": 20_000,
    "image_url": 2048,
    "deeplink": 2048,
    "property": 2000,
    "property_name": 100,
}
MAX_CATEGORY_LEVELS = 20
MAX_RATING = 5.0
# Decimal(14, 4) in the model.
_MAX_PRICE = Decimal("9999999999.9999")


def header_normalise(header: str) -> str:
    """ "  Image URL " -> "image_url": how headers are matched and properties named."""
    return re.sub(r"[\s\-]+", "_", header.replace("\ufeff", "").strip().lower())


class ProductIn(NamedTuple):
    """A product as the import (or the demo generator) hands it to products_upsert.

    A NamedTuple rather than a dataclass: a million of them are built per import,
    and a tuple is the cheapest object Python makes."""

    product_id: str
    name: str = ""
    categories: tuple[str, ...] | list[str] = ()
    price: Decimal | None = None
    currency: str = ""
    rating: float | None = None
    description: str = ""
    image_url: str = ""
    deeplink: str = ""
    in_stock: bool = True
    is_active: bool = True
    properties: dict[str, Any] | None = None
    row: int | None = None  # the record number in the source file (header = 1)


# --- Values --------------------------------------------------------------------


class BadValue(ValueError):
    """A value that cannot go into its column; the message is the reason shown."""


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?", re.ASCII)
# ASCII digits only (re.ASCII): Decimal reads other scripts' digits ("٣" is 3),
# which no catalog means.
_PRICE = re.compile(r"\+?\d+(?:[.,]\d+)?|\+?[.,]\d+", re.ASCII)
# What a valid price almost always is: checked first, so Decimal is made only once.
_PRICE_FAST = re.compile(r"\d{1,10}(?:[.,]\d{1,4})?", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_TRUE = {"true", "t", "yes", "y", "1", "on", "in stock", "in_stock", "instock", "available", "active", "enabled"}
_FALSE = {
    "false", "f", "no", "n", "0", "off", "out of stock", "out_of_stock", "outofstock", "sold out", "unavailable",
    "inactive", "disabled", "preorder", "backorder",
}  # fmt: skip
_PROPERTY_TRUE = {"true", "yes"}
_PROPERTY_FALSE = {"false", "no"}


def _text(limit: int) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if len(value) > limit:
            raise BadValue(f"longer than {limit} characters ({len(value)})")
        return value

    return convert


def parse_categories(value: str) -> list[str]:
    """ "Movies > Drama" or "Movies|Drama" -> ["Movies", "Drama"] (levels in order, no repeats)."""
    levels = [level.strip() for level in value.replace("|", ">").split(">")]
    if "" in levels:
        levels = [level for level in levels if level]
    if len(levels) > 1 and len(set(levels)) != len(levels):
        levels = list(dict.fromkeys(levels))
    if len(levels) > MAX_CATEGORY_LEVELS:
        raise BadValue(f"more than {MAX_CATEGORY_LEVELS} category levels")
    for level in levels:
        if len(level) > MAX_LENGTH["category"]:
            raise BadValue(f"a category longer than {MAX_LENGTH['category']} characters")
    return levels


def parse_price(value: str) -> Decimal:
    """ "19.99", "19,99" (decimal comma, as semicolon files from Europe have it)."""
    if _PRICE_FAST.fullmatch(value):
        return Decimal(value.replace(",", ".") if "," in value else value)
    if not _PRICE.fullmatch(value):
        raise BadValue("not a price (expected a number such as 19.99)")
    price = Decimal(value.replace(",", "."))
    if price > _MAX_PRICE:
        raise BadValue("price too large")
    if price.as_tuple().exponent < -4:  # type: ignore[operator]
        raise BadValue("more than 4 decimal places")
    return price


def parse_currency(value: str) -> str:
    code = value.upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise BadValue("not a currency code (expected 3 letters such as USD)")
    return code


def parse_rating(value: str) -> float:
    # float() also reads other scripts' digits and "4_5" (45).
    if not value.isascii() or "_" in value:
        raise BadValue("not a number")
    try:
        rating = float(value.replace(",", "."))
    except ValueError:
        raise BadValue("not a number") from None
    if not 0.0 <= rating <= MAX_RATING:  # also refuses nan
        raise BadValue(f"rating must be from 0 to {MAX_RATING:g}")
    return rating


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadValue("not a boolean (expected true/false, yes/no or 1/0)")


# A quantity fits a bigint with room to spare; longer runs of digits are not a
# count of anything (and int() refuses 4,300 digits and more).
_MAX_STOCK_DIGITS = 18


def parse_stock(value: str) -> bool:
    """A stock column holds a flag ("yes", "out of stock") or a quantity (0 = out),
    in ASCII digits: str.isdigit() also admits "²", which int() refuses."""
    if value.isascii() and value.isdigit():
        if len(value) > _MAX_STOCK_DIGITS:
            raise BadValue(f"not a stock quantity (more than {_MAX_STOCK_DIGITS} digits)")
        return value.strip("0") != ""
    return parse_bool(value)


def parse_image_url(value: str) -> str:
    if len(value) > MAX_LENGTH["image_url"]:
        raise BadValue(f"longer than {MAX_LENGTH['image_url']} characters ({len(value)})")
    lowered = value.lower()
    if not (lowered.startswith("https://") or lowered.startswith("http://")) or " " in value:
        raise BadValue("not an http(s) URL")
    return value


def parse_deeplink(value: str) -> str:
    if len(value) > MAX_LENGTH["deeplink"]:
        raise BadValue(f"longer than {MAX_LENGTH['deeplink']} characters ({len(value)})")
    # Any app scheme (myshop://...) is fine, but not script URLs: deeplinks end up in
    # console pages and messages as link targets.
    if not _SCHEME.match(value) or value.lower().startswith(("javascript:", "data:", "vbscript:")):
        raise BadValue("not a link (expected a URL with a scheme such as https:// or myapp://)")
    return value


# Property values. A column's type is decided once, from its first rows, so a
# column of sizes is numbers in every product (a recommendation filter
# `prop.size=42` then matches them all), and a later value that does not fit is
# reported rather than silently stored as another type.
PROPERTY_TYPES = ("number", "boolean", "date", "text")


def property_number(value: str) -> int | float:
    # No leading zeros ("00123" is a code, not a number), no thousands separators.
    if not _NUMBER.fullmatch(value):
        raise BadValue("not a number (this column's type was inferred from its first rows)")
    if "." not in value and "e" not in value and "E" not in value:
        # The JSON column's writer (orjson) holds 64-bit integers; int() itself
        # refuses 4,300 digits and more.
        if len(value) > 20 or not -(2**63) <= int(value) < 2**63:
            raise BadValue("number out of range")
        return int(value)
    number = float(value)
    if math.isinf(number):
        raise BadValue("number out of range")
    return number


def property_boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in _PROPERTY_TRUE:
        return True
    if lowered in _PROPERTY_FALSE:
        return False
    raise BadValue("not true/false (this column's type was inferred from its first rows)")


def property_date(value: str) -> str:
    """Dates stay ISO strings in the JSON: they sort and compare as text."""
    try:
        if _DATE.fullmatch(value):
            date.fromisoformat(value)  # a real day (not 2024-02-30)
            return value
        if _DATETIME.fullmatch(value):
            return datetime.fromisoformat(value.replace(" ", "T", 1)).isoformat()
    except ValueError:
        pass
    raise BadValue("not a date (expected YYYY-MM-DD; this column's type was inferred from its first rows)")


_PROPERTY_TEXT_MAX = MAX_LENGTH["property"]
_property_text = _text(_PROPERTY_TEXT_MAX)
PROPERTY_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "number": property_number,
    "boolean": property_boolean,
    "date": property_date,
    "text": _property_text,
}


def property_type_infer(values: list[str]) -> str:
    """The narrowest type every non-empty sample value fits; text when none or mixed."""
    present = [v for v in values if v]
    if not present:
        return "text"
    for kind in ("boolean", "number", "date"):
        convert = PROPERTY_CONVERTERS[kind]
        try:
            for value in present:
                convert(value)
        except BadValue:
            continue
        return kind
    return "text"


def property_value_candidates(value: str) -> list[Any]:
    """What a filter value `prop.size=42` may be stored as: 42 and "42"."""
    out: list[Any] = []
    for kind in ("boolean", "number", "date"):
        try:
            out.append(PROPERTY_CONVERTERS[kind](value))
        except BadValue:
            continue
    if value not in out:
        out.append(value)
    return out


# --- The file ------------------------------------------------------------------


class CatalogFileError(ValueError):
    """The file cannot be a catalog: nothing is stored or changed."""


@dataclass(frozen=True)
class Column:
    index: int
    header: str
    field: str | None = None  # a known field, or
    prop: str | None = None  # a property name, with
    type: str | None = None  # its inferred type; neither: ignored (no header)

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "header": self.header, "field": self.field, "prop": self.prop, "type": self.type}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Column:
        return cls(**data)

    @property
    def label(self) -> str:
        if self.field:
            return self.field
        if self.prop:
            return f"property ({self.type})"
        return "ignored"


@dataclass
class FileLayout:
    encoding: str
    delimiter: str
    header_row: int
    columns: list[Column]
    preview: list[list[str]] = field(default_factory=list)


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    """A byte that is not UTF-8 in a UTF-8 file is read as Windows-1252/Latin-1,
    so a file that mixes both (one row pasted from an old system) still imports."""
    assert isinstance(error, UnicodeDecodeError)
    chunk = error.object[error.start : error.end]
    return chunk.decode("cp1252", errors="catalog-latin-1-only"), error.end


def _latin1_only(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("catalog-latin-1", _latin1_fallback)
codecs.register_error("catalog-latin-1-only", _latin1_only)

# Windows-1252 is Latin-1 with printable characters (€, curly quotes) where
# Latin-1 has unused control codes: what "Latin-1" CSV exports really contain.
_ENCODING_CODECS = {
    "utf-8": ("utf-8", "catalog-latin-1"),
    "utf-8-sig": ("utf-8-sig", "catalog-latin-1"),
    "utf-16": ("utf-16", "strict"),
    "latin-1": ("cp1252", "catalog-latin-1-only"),
}


def _detect_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(b"PK\x03\x04"):
        raise CatalogFileError(
            "The file is a ZIP archive (an Excel .xlsx workbook?), not CSV text. "
            "Save it as CSV (UTF-8) and upload that."
        )
    if head.startswith(b"%PDF"):
        raise CatalogFileError("The file is a PDF, not CSV text.")
    controls = sum(head.count(bytes([c])) for c in range(32) if c not in (9, 10, 13))
    if b"\x00" in head or controls > len(head) // 100:
        raise CatalogFileError("The file is not text (it contains binary data). Upload the catalog as a CSV file.")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _detect_delimiter(first_line: str) -> str:
    counts = {d: 0 for d in (",", ";", "\t")}
    quoted = False
    for char in first_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def text_open(raw: BinaryIO, encoding: str) -> io.TextIOWrapper:
    codec, errors = _ENCODING_CODECS[encoding]
    return io.TextIOWrapper(raw, encoding=codec, errors=errors, newline="")  # type: ignore[arg-type]


def csv_reader(text: Any, delimiter: str) -> Any:
    # skipinitialspace: `a; "b;c"` is a quoted field after the space.
    return csv.reader(text, delimiter=delimiter, quotechar='"', doublequote=True, skipinitialspace=True, strict=False)


def file_inspect(raw: BinaryIO) -> FileLayout:
    """Read the first megabyte of `raw` (left at offset 0 again) and decide how to
    read it. Raises CatalogFileError when it cannot be a catalog: empty, not text,
    no product id column, a repeated column, no rows, or (when the file is no
    longer than what is read) a quote never closed."""
    raw.seek(0)
    head = raw.read(HEAD_BYTES)
    at_end = not raw.read(1)
    raw.seek(0)
    if not head.strip(b" \t\r\n\xef\xbb\xbf"):
        raise CatalogFileError("The file is empty.")
    encoding = _detect_encoding(head)
    codec, errors = _ENCODING_CODECS[encoding]
    text = codecs.getincrementaldecoder(codec)(errors=errors).decode(head, final=at_end)
    if text.startswith("\ufeff"):
        text = text[1:]
    header_row = 1
    first_line, _, rest = text.partition("\n")
    delimiter = ""
    sep = re.fullmatch(r"sep=(.)\r?", first_line)
    if sep:  # Excel's hint line
        delimiter, header_row, text = sep.group(1), 2, rest
        first_line = rest.partition("\n")[0]
    delimiter = delimiter or _detect_delimiter(first_line)
    lines = _Lines(io.StringIO(text, newline=""))
    records = csv_reader(lines, delimiter)
    try:
        header = next(records, None)
        start = records.line_num
        if header is not None and lines.ended and at_end:
            raise _unterminated(header_row, start - 1)
        sample: list[list[str]] = []
        for record in records:
            if lines.ended and at_end:  # (not at the end: the record is cut by the megabyte, dropped below)
                raise _unterminated(header_row + start, records.line_num - start - 1)
            start = records.line_num
            sample.append(record)
            if len(sample) >= SAMPLE_ROWS:
                break
        else:
            if not at_end and sample:
                sample.pop()  # the last record may be cut by the megabyte boundary
    except csv.Error as exc:
        raise CatalogFileError(f"The file is not readable as CSV: {exc}.") from None
    if not header or not any(h.strip() for h in header):
        raise CatalogFileError("The first line is empty: it must be the header, naming the columns.")
    columns = _columns_from_header(header, sample)
    if not any(record and any(v.strip() for v in record) for record in sample):
        raise CatalogFileError("The file has a header but no product rows.")
    preview = [record for record in sample if record][:PREVIEW_ROWS]
    return FileLayout(encoding=encoding, delimiter=delimiter, header_row=header_row, columns=columns, preview=preview)


def _columns_from_header(header: list[str], sample: list[list[str]]) -> list[Column]:
    columns: list[Column] = []
    seen: dict[str, int] = {}
    for index, raw_header in enumerate(header):
        name = header_normalise(raw_header)
        if not name:
            columns.append(Column(index=index, header=raw_header))
            continue
        field_name = ALIASES.get(name)
        key = field_name or name
        if key in seen:
            raise CatalogFileError(
                f"Columns {seen[key] + 1} and {index + 1} both give {key!r} "
                f"({header[seen[key]].strip()!r} and {raw_header.strip()!r}): keep one of them."
            )
        seen[key] = index
        if field_name:
            columns.append(Column(index=index, header=raw_header.strip(), field=field_name))
            continue
        if len(name) > MAX_LENGTH["property_name"]:
            raise CatalogFileError(
                f"Column {index + 1} has a name longer than {MAX_LENGTH['property_name']} characters."
            )
        values = [record[index].strip() for record in sample if len(record) == len(header)]
        columns.append(Column(index=index, header=raw_header.strip(), prop=name, type=property_type_infer(values)))
    if "product_id" not in seen:
        found = ", ".join(repr(h.strip()) for h in header[:12])
        raise CatalogFileError(
            f"No product id column. The header must have a column named product_id (or id, sku); found: {found}."
        )
    return columns


class _Lines:
    """The file's lines for the csv reader, noting when they run out: the reader
    asks past the last line only while it is inside a quoted value (after any
    other line, even a last one without a line break, its record is complete),
    so a record it returns after that is one whose quote was never closed. With
    strict=False (kept: it reads the stray quotes of messy exports as text) the
    csv module would return it as one value holding every line to the end.
    The lines pass through itertools.chain, in C: no Python call per line."""

    __slots__ = ("ended", "lines")

    def __init__(self, text: Any) -> None:
        self.ended = False
        self.lines = itertools.chain(text, self._end())

    def _end(self) -> Iterator[str]:
        self.ended = True
        yield from ()

    def __iter__(self) -> Iterator[str]:
        return self.lines


def _unterminated(line: int, swallowed: int) -> CatalogFileError:
    """The error of a quote opened on `line` and never closed, `swallowed` lines before the end."""
    rest = f"the {swallowed} line(s) after it" if swallowed else "nothing after it"
    return CatalogFileError(
        f'Line {line}: a quote (") opens a value that is never closed, so the rest of the file '
        f"({rest}) would be read as that one value. Close the quote (a quote inside a quoted "
        f'value is written twice: "") and upload the file again.'
    )


def records_iter(text: Any, layout: FileLayout, skip: int = 0) -> Iterator[tuple[int, list[str]]]:
    """(record number, fields) for each data record after the header, the first
    `skip` data records left out. Record numbers count from the file's first line
    (the header is 1), as a spreadsheet numbers rows. Raises CatalogFileError,
    naming the line, at a quote that is never closed."""
    lines = _Lines(text)
    records = csv_reader(lines, layout.delimiter)
    number = 0
    start = 0
    for record in records:
        if lines.ended:
            raise _unterminated(start + 1, records.line_num - start - 1)
        start = records.line_num
        number += 1
        if number <= layout.header_row or number <= layout.header_row + skip:
            continue
        yield number, record


# Cells a spreadsheet would run as a formula (OWASP's CSV injection list), in the
# files this platform writes from its users' data: prefixed with a single quote,
# which Excel, LibreOffice and Google Sheets show as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell_spreadsheet_safe(value: Any) -> Any:
    """`value` as a CSV cell that no spreadsheet takes for a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


# --- Rows ----------------------------------------------------------------------


class RowError(NamedTuple):
    row: int
    product_id: str
    column: str
    value: str
    reason: str


_ERROR_VALUE_CHARS = 1000


def _clip(value: str) -> str:
    return value if len(value) <= _ERROR_VALUE_CHARS else value[:_ERROR_VALUE_CHARS] + "…"


_PROPERTIES_SLOT = ProductIn._fields.index("properties")
_ROW_SLOT = ProductIn._fields.index("row")


class RowParser:
    """Turns records into ProductIn tuples; the converters are chosen once per file."""

    _KNOWN: dict[str, Callable[[str], Any]] = {
        "product_id": _text(MAX_LENGTH["product_id"]),
        "name": _text(MAX_LENGTH["name"]),
        "categories": parse_categories,
        "price": parse_price,
        "currency": parse_currency,
        "rating": parse_rating,
        "description": _text(MAX_LENGTH["description"]),
        "image_url": parse_image_url,
        "deeplink": parse_deeplink,
        "in_stock": parse_stock,
        "is_active": parse_bool,
    }

    def __init__(self, columns: list[Column]) -> None:
        self.width = max((c.index for c in columns), default=-1) + 1
        slot = {name: i for i, name in enumerate(ProductIn._fields)}
        self.id_index = next(c.index for c in columns if c.field == "product_id")
        self.known = [
            (c.index, c.header, slot[c.field], self._KNOWN[c.field])
            for c in columns
            if c.field and c.field != "product_id"
        ]
        self.props = [
            (c.index, c.header, c.prop, None if c.type in (None, "text") else PROPERTY_CONVERTERS[c.type])
            for c in columns
            if c.prop
        ]
        self.fields = {c.field for c in columns if c.field}
        self.property_keys = [c.prop for c in columns if c.prop]
        self.id_header = columns[self.id_index].header
        self._defaults = list(ProductIn(product_id=""))

    def parse(self, row: int, record: list[str]) -> tuple[ProductIn | None, list[RowError]]:
        """(product, []) for a valid record; (None, errors) otherwise. A blank
        record gives (None, [])."""
        if len(record) != self.width:
            if not any(v.strip() for v in record):
                return None, []
            product_id = record[self.id_index].strip() if len(record) > self.id_index else ""
            reason = f"has {len(record)} fields, the header has {self.width}"
            return None, [RowError(row, product_id[:255], "", _clip(self._delimited(record)), reason)]
        product_id = record[self.id_index].strip()
        errors: list[RowError] = []
        if "\x00" in "".join(record):  # PostgreSQL text cannot hold NUL
            reason = "contains a NUL character (binary data)"
            return None, [RowError(row, product_id[:255].replace("\x00", ""), "", "", reason)]
        if not product_id:
            if not any(v.strip() for v in record):
                return None, []
            errors.append(RowError(row, "", self.id_header, "", "product_id is required"))
        elif len(product_id) > MAX_LENGTH["product_id"]:
            errors.append(
                RowError(
                    row,
                    product_id[:255],
                    self.id_header,
                    _clip(product_id),
                    f"longer than {MAX_LENGTH['product_id']} characters ({len(product_id)})",
                )
            )
        out = self._defaults.copy()
        out[0] = product_id
        for index, header, slot, convert in self.known:
            value = record[index].strip()
            if value:
                try:
                    out[slot] = convert(value)
                except BadValue as exc:
                    errors.append(RowError(row, product_id[:255], header, _clip(value), str(exc)))
        properties: dict[str, Any] = {}
        for index, header, name, convert in self.props:
            value = record[index].strip()
            if value:
                if convert is None:  # text: the common case, without a call
                    if len(value) <= _PROPERTY_TEXT_MAX:
                        properties[name] = value
                        continue
                    convert = _property_text
                try:
                    properties[name] = convert(value)
                except BadValue as exc:
                    errors.append(RowError(row, product_id[:255], header, _clip(value), str(exc)))
        if errors:
            return None, errors
        out[_PROPERTIES_SLOT] = properties
        out[_ROW_SLOT] = row
        return ProductIn._make(out), []

    @staticmethod
    def _delimited(record: list[str]) -> str:
        return " | ".join(record)
