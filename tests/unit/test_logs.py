import io
import json
import logging

import pytest
import redis

from aisystant_server import logs
from aisystant_server.outages import log_failure
from aisystant_server.settings import SettingsError, load_settings
from tests.processes import ROOT


@pytest.fixture
def configured(tmp_path):
    """`configure(ini, settings)`, its stderr captured; the root logger restored after."""
    root, ours = logging.getLogger(), logging.getLogger("aisystant_server")
    saved = root.handlers[:], root.level, ours.level

    def configure(**environ):
        settings = load_settings({}, environ)
        logs.configure(f"{ROOT}/production.ini", settings)
        stream = io.StringIO()
        for handler in root.handlers:
            handler.setStream(stream)
        return stream

    yield configure
    root.handlers[:], root.level = saved[0], saved[1]
    ours.setLevel(saved[2])


def test_text_lines_carry_their_fields_after_the_message(configured):
    stream = configured()
    with logs.fields(request_id="req-1"):
        logging.getLogger("aisystant_server.test").info("%(method)s %(path)s", {"method": "GET", "path": "/x"},
                                                         extra={"user_id": 7, "reply_id": None})
    line = stream.getvalue().strip()
    assert line.endswith("INFO  [aisystant_server.test] GET /x request_id=req-1 user_id=7")


def test_a_field_with_spaces_is_quoted_so_the_line_still_parses(configured):
    stream = configured()
    logging.getLogger("aisystant_server.test").warning("refused", extra={"reason": 'a "bad" one'})
    assert stream.getvalue().strip().endswith(r'refused reason="a \"bad\" one"')


def test_json_lines_have_the_message_its_values_and_the_fields(configured):
    stream = configured(LOG_FORMAT="json")
    with logs.fields(reply_id=12):
        logging.getLogger("aisystant_server.test").info("reply %(status)s", {"status": "complete", "tokens_out": 5},
                                                         extra={"conversation_id": 3})
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "reply complete" and entry["level"] == "INFO"
    assert entry["logger"] == "aisystant_server.test" and entry["time"].endswith("Z")
    assert (entry["status"], entry["tokens_out"], entry["reply_id"], entry["conversation_id"]) == ("complete", 5, 12, 3)


def test_a_json_line_keeps_its_traceback_on_one_line(configured):
    stream = configured(LOG_FORMAT="json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("aisystant_server.test").exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "ValueError: boom" in json.loads(lines[0])["exception"]


def test_fields_end_with_their_block(configured):
    stream = configured()
    log = logging.getLogger("aisystant_server.test")
    with logs.fields(request_id="outer"):
        with logs.fields(user_id=1):
            log.info("inner")
        log.info("outer")
    log.info("none")
    assert [line.split("] ")[1] for line in stream.getvalue().splitlines()] == [
        "inner request_id=outer user_id=1", "outer request_id=outer", "none"]


def test_log_level_sets_our_loggers_only(configured):
    stream = configured(LOG_LEVEL="warning")
    logging.getLogger("aisystant_server.access").info("quiet")
    logging.getLogger("aisystant_server.access").warning("loud")
    assert stream.getvalue().count("\n") == 1 and "loud" in stream.getvalue()
    stream = configured(LOG_LEVEL="DEBUG")
    logging.getLogger("aisystant_server.access").debug("probe")
    logging.getLogger("some.library").info("library chatter")
    assert "probe" in stream.getvalue() and "chatter" not in stream.getvalue()


@pytest.mark.parametrize("variable, value", [("LOG_LEVEL", "verbose"), ("LOG_FORMAT", "xml")])
def test_an_unknown_level_or_format_is_refused(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load_settings({}, {variable: value})


@pytest.mark.parametrize("presented, kept", [
    ("f81d4fae-7dec-11d0-a765-00a0c91e6bf6", True),
    ("Root=1-67891233-abcdef012345678912345678", True),
    ("with space", False), ("x" * 129, False), ("line\nbreak", False), ("", False), (None, False),
])
def test_a_request_id_is_kept_only_when_it_is_sane(presented, kept):
    found = logs.new_request_id(presented)
    assert (found == presented) is kept
    assert logs.SANE_REQUEST_ID.fullmatch(found)


@pytest.mark.parametrize("error, traceback_kept", [
    (redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), False),
    (KeyError("conversation_id"), True),
])
def test_an_outage_is_logged_in_one_line_and_a_bug_with_its_traceback(caplog, error, traceback_kept):
    log = logging.getLogger("aisystant_server.tests")
    try:
        raise error
    except Exception as caught:
        with caplog.at_level(logging.ERROR, logger=log.name):
            log_failure(log, caught, "reaper pass failed on %s", "worker-1")
    [record] = caplog.records
    assert record.getMessage().startswith("reaper pass failed on worker-1")
    assert (record.exc_info is not None) == traceback_kept
    if not traceback_kept:
        assert record.getMessage().endswith(": Error 111 connecting to 127.0.0.1:6379. Connection refused.")
