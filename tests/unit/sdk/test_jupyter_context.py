import re
import sys

import pandas
import pytest

from aisystant_sdk.jupyter.context import build_message, collect, describe
from aisystant_sdk.jupyter.errors import NotebookError


def test_a_string_is_sent_as_it_is():
    assert describe("log", "GET / 502\nGET / 200\n") == ("text, 2 lines", "GET / 502\nGET / 200\n")


def test_a_list_of_lines_is_one_line_each_even_from_readlines():
    assert describe("errors", ["a failed\n", "b failed\r\n", "c failed"]) == ("3 lines", "a failed\nb failed\nc failed")


def test_a_dict_is_indented_json_keeping_non_ascii_text():
    kind, text = describe("config", {"replicas": 3, "zone": "Zürich", "limits": {"memory": "512Mi"}, "debug": None})
    assert kind == "dict, as JSON"
    assert text == '{\n  "replicas": 3,\n  "zone": "Zürich",\n  "limits": {\n    "memory": "512Mi"\n  },\n  "debug": null\n}'


def test_json_able_lists_and_numbers_are_json():
    assert describe("rows", [{"pod": "api-1", "restarts": 4}]) == ("list, as JSON", '[\n  {\n    "pod": "api-1",\n    "restarts": 4\n  }\n]')
    assert describe("ratio", 0.25) == ("float, as JSON", "0.25")


def test_other_objects_are_their_repr():
    class Probe:
        def __repr__(self):
            return "Probe(path='/healthz', failures=3)"

    assert describe("probe", Probe()) == ("Probe", "Probe(path='/healthz', failures=3)")
    assert describe("pods", {"api-1", "api-2"})[0] == "set"


def test_utf8_bytes_are_text_and_binary_bytes_are_refused():
    assert describe("raw", "état: ok\n".encode()) == ("text, 1 line", "état: ok\n")
    with pytest.raises(NotebookError, match="`blob` holds binary data, not UTF-8 text"):
        describe("blob", b"\xff\xfe\x00")


def _failing_call():
    {}["missing-key"]


def test_an_exception_is_its_traceback():
    try:
        _failing_call()
    except KeyError as exc:
        error = exc
    kind, text = describe("error", error)
    assert kind == "KeyError"
    assert text.startswith("Traceback (most recent call last):")
    assert "in _failing_call" in text
    assert text.endswith("KeyError: 'missing-key'")


def test_a_small_dataframe_is_shown_whole_with_its_dtypes():
    frame = pandas.DataFrame({"pod": ["api-1", "api-2"], "restarts": [4, 0]})
    kind, text = describe("pods", frame)
    assert kind == "pandas DataFrame, 2 rows x 2 columns"
    assert re.search(r"dtypes:\npod +\w+\nrestarts +int64\n", text)
    assert "api-1" in text and "api-2" in text


def test_a_large_dataframe_is_its_head_and_tail_never_the_whole_frame():
    frame = pandas.DataFrame({"latency_ms": range(100_000), "status": [502] * 100_000})
    kind, text = describe("requests", frame)
    assert kind == "pandas DataFrame, 100,000 rows x 2 columns"
    assert "head(10):" in text and "tail(10):" in text
    assert " 9 " in text and "99999" in text and "50000" not in text
    assert len(text) < 2_000


def test_a_series_is_described_like_a_one_column_frame():
    kind, text = describe("latency", pandas.Series([120, 3400], name="latency_ms"))
    assert kind == "pandas Series, 2 values"
    assert "latency_ms" in text and "3400" in text


def test_variables_become_labelled_fenced_blocks_after_the_question():
    variables = collect(("errors", "config"), {"errors": ["E1 timeout", "E2 ```fenced```"], "config": {"a": 1}}, 60_000)
    assert build_message("Why?", variables) == (
        "Why?\n\n"
        "Attached variable `errors` (2 lines):\n````\nE1 timeout\nE2 ```fenced```\n````\n\n"
        'Attached variable `config` (dict, as JSON):\n```\n{\n  "a": 1\n}\n```'
    )


def test_oversized_context_keeps_the_end_with_a_cut_marker_and_a_notice():
    log = "".join(f"line {n}\n" for n in range(10_000))
    [variable] = collect(("log",), {"log": log}, 1_000)
    assert variable.cut_notice == (
        f"aisystant: log was cut to its last 1,000 of {len(log):,} characters (raise --max-context to keep more)"
    )
    message = build_message("What happened?", [variable])
    assert "earlier characters cut by aisystant ...]\n" in message
    assert "line 9999" in message and "line 0\n" not in message
    assert len(message) < 1_200


def test_small_context_has_no_notice():
    [variable] = collect(("log",), {"log": "ok"}, 1_000)
    assert variable.cut_notice is None


def test_an_unknown_variable_is_a_one_line_error():
    with pytest.raises(NotebookError, match="no variable named `logz` in this notebook: define it first, or check the spelling of --context logz"):
        collect(("logz",), {"logs": []}, 1_000)


def test_the_last_exception_comes_first_with_its_traceback(monkeypatch):
    try:
        _failing_call()
    except KeyError as exc:
        monkeypatch.setattr(sys, "last_value", exc, raising=False)
    variables = collect(("extra",), {"extra": "x"}, 60_000, last_error=True)
    message = build_message("Explain", variables)
    assert message.startswith("Explain\n\nAttached the last exception raised in the notebook (KeyError):\n```\nTraceback")
    assert message.endswith("Attached variable `extra` (text, 1 line):\n```\nx\n```")


def test_asking_about_the_last_exception_before_any_is_a_one_line_error(monkeypatch):
    monkeypatch.delattr(sys, "last_value", raising=False)
    with pytest.raises(NotebookError, match="no exception has been raised in this kernel yet"):
        collect((), {}, 1_000, last_error=True)
