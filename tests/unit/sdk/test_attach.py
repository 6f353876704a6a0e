import io

import pytest

from aisystant_sdk.cli.attach import Attachment, build_message, cap, content_of, read_source, read_stdin, tail
from aisystant_sdk.cli.errors import InputError


def source(label, size, **kwargs):
    return Attachment(label=label, text="x" * size, total_chars=size, **kwargs)


def test_read_source_counts_everything_but_keeps_only_the_tail():
    data = "".join(f"line {i}\n" for i in range(200_000)).encode()
    attachment = read_source(io.BytesIO(data), "big.log", keep=1000)
    assert attachment.total_chars == len(data)
    assert attachment.text.endswith("line 199999\n")
    assert 1000 <= len(attachment.text) < len(data)


def test_read_source_decodes_characters_split_between_reads():
    data = ("é" * 3_000_000).encode()
    attachment = read_source(io.BytesIO(data), "accents.txt", keep=10)
    assert attachment.total_chars == 3_000_000
    assert set(attachment.text) == {"é"}


@pytest.mark.parametrize("data", [b"ok\x00ok", b"\xff\xfe", b"truncated \xc3"])
def test_read_source_refuses_binary(data):
    with pytest.raises(InputError, match="looks binary"):
        read_source(io.BytesIO(data), "blob", keep=100)


def test_stdin_is_named_as_such():
    with pytest.raises(InputError, match="^standard input looks binary"):
        read_stdin(io.BytesIO(b"\x00"), keep=10)


def test_cap_keeps_everything_under_the_budget():
    assert [a.kept_chars for a in cap([source("a", 10), source("b", 20)], 100)] == [None, None]


def test_cap_keeps_small_sources_whole_and_shares_the_rest():
    capped = cap([source("big", 10_000), source("small", 100), source("medium", 5_000)], 3_000)
    kept = {a.label: a.kept_chars for a in capped}
    assert kept == {"big": 1450, "small": None, "medium": 1450}
    assert [a.label for a in capped] == ["big", "small", "medium"]


def test_cap_to_zero_drops_all_text():
    (capped,) = cap([source("log", 50)], 0)
    assert capped.kept_chars == 0
    assert content_of(capped) == "[... 50 earlier characters cut by aisystant ...]\n"


def test_tail_starts_at_a_line_when_one_is_near():
    text = "0123456789\n" * 100
    assert tail(text, 105) == "0123456789\n" * 9
    assert tail(text, 110) == "0123456789\n" * 10
    assert tail("a" * 100 + "\nend", 50) == "a" * 46 + "\nend"
    assert tail("abcdef", 3) == "def"
    assert tail("abc", 10) == "abc"


def test_cut_source_carries_a_marker_with_the_amount_cut():
    text = "".join(f"{i:04d}\n" for i in range(1000))
    (capped,) = cap([Attachment("app.log", text, len(text))], 100)
    content = content_of(capped)
    assert content.startswith("[... 4,900 earlier characters cut by aisystant ...]\n")
    assert content.split("\n", 1)[1] == "".join(f"{i:04d}\n" for i in range(980, 1000))


def test_message_puts_the_question_first_then_labelled_blocks():
    message = build_message(
        "why does it crash?",
        [Attachment("stdin", "OOMKilled\n", 10, is_stdin=True), Attachment("deploy.yaml", "limits: {}", 10)],
    )
    assert message == (
        "why does it crash?\n\n"
        "Attached standard input:\n```\nOOMKilled\n```\n\n"
        "Attached file `deploy.yaml`:\n```\nlimits: {}\n```"
    )


def test_fence_is_longer_than_any_backtick_run_inside():
    message = build_message("q", [Attachment("README.md", "```sh\nls\n```", 12)])
    assert "\n````\n```sh\nls\n```\n````" in message


def test_piped_text_alone_is_the_question():
    assert build_message("", [Attachment("stdin", "what is OOMKilled?\n", 19, is_stdin=True)]) == "what is OOMKilled?\n"


def test_a_file_named_stdin_is_still_a_file():
    message = build_message("q", [Attachment("stdin", "text", 4)])
    assert "Attached file `stdin`:" in message
