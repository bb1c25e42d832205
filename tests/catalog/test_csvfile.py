"""The CSV reader on its own: no database."""

import io
from decimal import Decimal

import pytest

from catalog.csvfile import (
    SAMPLE_ROWS,
    CatalogFileError,
    ProductIn,
    RowParser,
    cell_spreadsheet_safe,
    file_inspect,
    parse_categories,
    property_type_infer,
    property_value_candidates,
    records_iter,
    text_open,
)


def _read(data: bytes) -> tuple[list[ProductIn], list]:
    raw = io.BytesIO(data)
    layout = file_inspect(raw)
    parser = RowParser(layout.columns)
    products, errors = [], []
    for row, record in records_iter(text_open(raw, layout.encoding), layout):
        product, row_errors = parser.parse(row, record)
        if product:
            products.append(product)
        errors.extend(row_errors)
    return products, errors


def test_utf8_with_bom_semicolons_aliases_and_quoted_newlines():
    data = (
        "\ufeffSKU;Title;Category;Price;Stock;Image;URL\r\n"
        'A-1;"Shirt; red";Men > Shirts;19,99;yes;https://x.io/a.jpg;shop://p/A-1\r\n'
        'A-2;"Two\nlines ""quoted""";Men|Shoes;5;0;;\r\n'
    ).encode()
    layout = file_inspect(io.BytesIO(data))
    assert (layout.encoding, layout.delimiter) == ("utf-8-sig", ";")
    assert [(c.header, c.field) for c in layout.columns] == [
        ("SKU", "product_id"),
        ("Title", "name"),
        ("Category", "categories"),
        ("Price", "price"),
        ("Stock", "in_stock"),
        ("Image", "image_url"),
        ("URL", "deeplink"),
    ]
    products, errors = _read(data)
    assert errors == []
    a1, a2 = products
    assert (a1.product_id, a1.name, a1.categories, a1.price, a1.in_stock, a1.row) == (
        "A-1",
        "Shirt; red",
        ["Men", "Shirts"],
        Decimal("19.99"),
        True,
        2,
    )
    assert (a1.image_url, a1.deeplink) == ("https://x.io/a.jpg", "shop://p/A-1")
    assert (a2.name, a2.categories, a2.in_stock, a2.row) == ('Two\nlines "quoted"', ["Men", "Shoes"], False, 3)


def test_latin1_file_and_tab_delimiter():
    data = "id\tname\tcolour\nB1\tCafé crème\tbleu clair\n".encode("latin-1")
    layout = file_inspect(io.BytesIO(data))
    assert (layout.encoding, layout.delimiter) == ("latin-1", "\t")
    products, errors = _read(data)
    assert errors == []
    assert (products[0].name, products[0].properties) == ("Café crème", {"colour": "bleu clair"})


def test_a_latin1_byte_late_in_a_utf8_file_is_read_as_latin1():
    head = "product_id,name\n" + "".join(f"P{i},Name {i}\n" for i in range(60_000))  # > 1 MB of UTF-8
    data = head.encode() + "P-x,Crème brûlée ñ €\n".encode() + b"P-y,Caf" + b"\xe9\n"
    products, errors = _read(data)
    assert errors == []
    assert [p.name for p in products[-2:]] == ["Crème brûlée ñ €", "Café"]


def test_excel_sep_line_sets_the_delimiter_and_row_numbers_follow_the_file():
    data = b"sep=;\nproduct_id;price\nA;1\nB;x\n"
    layout = file_inspect(io.BytesIO(data))
    assert (layout.delimiter, layout.header_row) == (";", 2)
    products, errors = _read(data)
    assert [p.row for p in products] == [3]
    assert [(e.row, e.column, e.value) for e in errors] == [(4, "price", "x")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"\xef\xbb\xbf\r\n", "The file is empty."),
        (b"PK\x03\x04\x14\x00\x06\x00", "ZIP archive"),
        (b"\x00\x01\x02binary\x00\x00" * 20, "not text"),
        (b"name,price\nShirt,5\n", "No product id column"),
        (b"id,sku\n1,2\n", "Columns 1 and 2 both give 'product_id'"),
        (b"product_id,Colour,colour\nA,red,blue\n", "both give 'colour'"),
        (b"product_id,name\n", "header but no product rows"),
        (b"\nproduct_id\nA\n", "first line is empty"),
    ],
)
def test_a_file_that_cannot_be_a_catalog_is_rejected_with_a_clear_message(data, message):
    with pytest.raises(CatalogFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        file_inspect(io.BytesIO(data))


def test_invalid_values_are_reported_with_row_column_value_and_reason():
    data = (
        "product_id,name,price,in_stock,rating,currency,image_url,deeplink\n"
        "A,ok,1.5,yes,4.5,usd,https://i.io/a.png,app://a\n"
        "B,,abc,maybe,7,US,ftp://x,javascript:alert(1)\n"
        ",no id,1,yes,,,,\n"
        f"C,{'n' * 501},1,yes,,,,\n"
        "D,short row\n"
    ).encode()
    products, errors = _read(data)
    assert [(p.product_id, p.currency, p.rating) for p in products] == [("A", "USD", 4.5)]
    assert [(e.row, e.product_id, e.column, e.value, e.reason) for e in errors] == [
        (3, "B", "price", "abc", "not a price (expected a number such as 19.99)"),
        (3, "B", "in_stock", "maybe", "not a boolean (expected true/false, yes/no or 1/0)"),
        (3, "B", "rating", "7", "rating must be from 0 to 5"),
        (3, "B", "currency", "US", "not a currency code (expected 3 letters such as USD)"),
        (3, "B", "image_url", "ftp://x", "not an http(s) URL"),
        (
            3,
            "B",
            "deeplink",
            "javascript:alert(1)",
            "not a link (expected a URL with a scheme such as https:// or myapp://)",
        ),
        (4, "", "product_id", "", "product_id is required"),
        (5, "C", "name", "n" * 501, "longer than 500 characters (501)"),
        (6, "D", "", "D | short row", "has 2 fields, the header has 8"),
    ]


def test_property_types_are_inferred_per_column_from_the_first_rows():
    data = (
        b"product_id,size,weight,on_sale,launched,zip,colour\n"
        b"A,42,1.5,true,2024-03-01,01234,red\n"
        b"B,44,2,false,2024-03-02,99999,\n"
        b"C,big,3,no,2024-02-30,12345,blue\n"
    )
    layout = file_inspect(io.BytesIO(data))
    assert {c.prop: c.type for c in layout.columns if c.prop} == {
        "size": "text",
        "weight": "number",
        "on_sale": "boolean",
        "launched": "text",  # 2024-02-30 is not a date
        "zip": "text",  # leading zero: a code, not a number
        "colour": "text",
    }
    products, errors = _read(data)
    assert errors == []
    assert products[0].properties == {
        "size": "42",
        "weight": 1.5,
        "on_sale": True,
        "launched": "2024-03-01",
        "zip": "01234",
        "colour": "red",
    }
    assert products[1].properties == {
        "size": "44",
        "weight": 2,
        "on_sale": False,
        "launched": "2024-03-02",
        "zip": "99999",
    }


def test_a_value_that_does_not_fit_its_columns_type_rejects_the_row():
    # The first 1,000 rows decide: size is a number, launch a date.
    rows = "".join(f"P{i},{i},2024-01-0{1 + i % 9}\n" for i in range(SAMPLE_ROWS))
    data = f"product_id,size,launch\n{rows}X1,XL,2024-01-01\nX2,10,soon\nX3,11,2024-02-01\n".encode()
    products, errors = _read(data)
    assert len(products) == SAMPLE_ROWS + 1
    assert products[-1].properties == {"size": 11, "launch": "2024-02-01"}
    assert [(e.row, e.column, e.value) for e in errors] == [
        (SAMPLE_ROWS + 2, "size", "XL"),
        (SAMPLE_ROWS + 3, "launch", "soon"),
    ]
    assert errors[0].reason == "not a number (this column's type was inferred from its first rows)"


def test_categories_paths_and_stock_quantities():
    assert parse_categories("Movies > Drama") == ["Movies", "Drama"]
    assert parse_categories(" Movies|Drama | Drama > ") == ["Movies", "Drama"]
    products, _ = _read(b"id,stock\nA,0\nB,12\nC,out of stock\nD,\n")
    assert [p.in_stock for p in products] == [False, True, False, True]


def test_property_type_inference_and_filter_candidates():
    assert property_type_infer(["1", "2.5", ""]) == "number"
    assert property_type_infer(["yes", "no"]) == "boolean"
    assert property_type_infer(["2024-01-01", "2024-01-02T10:00:00Z"]) == "date"
    assert property_type_infer([]) == "text"
    assert property_value_candidates("42") == [42, "42"]
    assert property_value_candidates("true") == [True, "true"]
    assert property_value_candidates("red") == ["red"]


def test_an_unterminated_quote_is_an_error_naming_its_line():
    data = b'product_id,name\nA1,Shirt\nA2,"Hat\nA3,Scarf\nA4,Sock\n'
    with pytest.raises(CatalogFileError) as error:
        file_inspect(io.BytesIO(data))
    assert str(error.value) == (
        'Line 3: a quote (") opens a value that is never closed, so the rest of the file (the 2 line(s) '
        "after it) would be read as that one value. Close the quote (a quote inside a quoted value is "
        'written twice: "") and upload the file again.'
    )


def test_records_stop_at_an_unterminated_quote_past_the_inspected_head():
    """Past the first megabyte only records_iter sees the file: the records before
    the quote come, then the error names the quote's line."""
    layout = file_inspect(io.BytesIO(b"product_id,name\nA1,Shirt\n"))
    data = b'product_id,name\nA1,Shirt\nA2,"Two\nlines"\nA3,"Hat\nA4,Scarf\nA5,Sock'
    records = records_iter(text_open(io.BytesIO(data), layout.encoding), layout)
    assert [next(records), next(records)] == [(2, ["A1", "Shirt"]), (3, ["A2", "Two\nlines"])]
    with pytest.raises(CatalogFileError, match=r"^Line 5: a quote .* \(the 2 line\(s\) after it\)"):
        next(records)


@pytest.mark.parametrize("last", [b'A2,"Hat"', b"A2,Hat", b'A2,"Hat"\r\n'])
def test_a_last_line_without_a_line_break_or_a_closed_quote_is_read(last):
    products, errors = _read(b"product_id,name\nA1,Shirt\n" + last)
    assert ([p.name for p in products], errors) == (["Shirt", "Hat"], [])


def test_cells_a_spreadsheet_would_run_as_formulas_are_quoted():
    cells = ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "plain", "a=b", "", 7, None]
    assert [cell_spreadsheet_safe(c) for c in cells] == [
        "'=1+2", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "plain", "a=b", "", 7, None
    ]  # fmt: skip


def test_integers_beyond_64_bits_are_not_numbers():
    # orjson, which writes the properties column, holds 64-bit integers, and
    # int() refuses 4,300 digits: such a column is text, and a filter value
    # of that kind is matched as text only.
    big = str(2**63)
    assert property_value_candidates(str(2**63 - 1)) == [2**63 - 1, str(2**63 - 1)]
    assert property_value_candidates(big) == [big]
    assert property_value_candidates("9" * 5000) == ["9" * 5000]
    assert property_type_infer([big, "1"]) == "text"
    products, errors = _read(f"id,code\nA,{big}\nB,1\n".encode())
    assert ([p.properties for p in products], errors) == ([{"code": big}, {"code": "1"}], [])


HUGE = "9" * 5000  # int() refuses 4,300 digits and more


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        # "²".isdigit() is true, int("²") a ValueError.
        ("stock", "²", "not a boolean (expected true/false, yes/no or 1/0)"),
        ("stock", "٣", "not a boolean (expected true/false, yes/no or 1/0)"),
        ("stock", HUGE, "not a stock quantity (more than 18 digits)"),
        ("price", "²", "not a price (expected a number such as 19.99)"),
        ("price", "٣", "not a price (expected a number such as 19.99)"),
        ("price", HUGE, "price too large"),
        ("price", "0." + HUGE, "more than 4 decimal places"),
        ("price", "1e999", "not a price (expected a number such as 19.99)"),
        ("price", "NaN", "not a price (expected a number such as 19.99)"),
        ("price", "Infinity", "not a price (expected a number such as 19.99)"),
        ("rating", "²", "not a number"),
        ("rating", "٣", "not a number"),
        ("rating", "4_5", "not a number"),
        ("rating", HUGE, "rating must be from 0 to 5"),
        ("rating", "1e999", "rating must be from 0 to 5"),
        ("rating", "NaN", "rating must be from 0 to 5"),
        ("rating", "-Infinity", "rating must be from 0 to 5"),
    ],
)
def test_a_number_no_column_can_hold_is_a_rejected_value_with_its_line_and_column(header, value, reason):
    products, errors = _read(f"id,{header}\nA,1\nB,{value}\nC,2\n".encode())
    assert [p.product_id for p in products] == ["A", "C"]
    assert [(e.row, e.product_id, e.column, e.reason) for e in errors] == [(3, "B", header, reason)]


def test_a_stock_quantity_in_ascii_digits_is_in_stock_unless_zero():
    products, errors = _read(b"id,stock\nA,0\nB,000\nC,7\nD,012\nE,999999999999999999\n")
    assert errors == []
    assert [(p.product_id, p.in_stock) for p in products] == [
        ("A", False),
        ("B", False),
        ("C", True),
        ("D", True),
        ("E", True),
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("²", "not a number (this column's type was inferred from its first rows)"),
        ("٣", "not a number (this column's type was inferred from its first rows)"),
        ("1٣", "not a number (this column's type was inferred from its first rows)"),
        (HUGE, "number out of range"),
        ("1e999", "number out of range"),
        ("NaN", "not a number (this column's type was inferred from its first rows)"),
        ("Infinity", "not a number (this column's type was inferred from its first rows)"),
    ],
)
def test_a_number_property_no_json_can_hold_is_a_rejected_value(value, reason):
    rows = "".join(f"P{i},{i}\n" for i in range(SAMPLE_ROWS))  # a number column, from its first rows
    products, errors = _read(f"id,size\n{rows}B,{value}\n".encode())
    assert len(products) == SAMPLE_ROWS
    assert [(e.row, e.product_id, e.column, e.reason) for e in errors] == [(SAMPLE_ROWS + 2, "B", "size", reason)]
