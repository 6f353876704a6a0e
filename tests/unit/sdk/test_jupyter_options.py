import pytest

from aisystant_sdk.jupyter.errors import NotebookError
from aisystant_sdk.jupyter.options import AskOptions, Command, parse_admin, parse_ask


def test_cell_magic_question_is_the_cell_and_options_the_line():
    options = parse_ask("--context logs --context df --out diagnosis", "Why do these fail?\n")
    assert options == AskOptions(question="Why do these fail?", context=("logs", "df"), out="diagnosis")


def test_line_magic_question_is_the_rest_of_the_line_verbatim():
    options = parse_ask("-c what's an OOMKilled pod, and why \"137\"?")
    assert options.continue_last is True
    assert options.question == "what's an OOMKilled pod, and why \"137\"?"


def test_defaults_continue_the_notebook_conversation_with_the_cli_context_cap():
    assert parse_ask("", "hello") == AskOptions(question="hello", max_context=60_000)


@pytest.mark.parametrize("line, expected", [
    ("--new", {"new": True}),
    ("--conversation 12", {"conversation_id": 12}),
    ("--conversation=12", {"conversation_id": 12}),
    ("--error", {"error": True}),
    ("--max-context 500", {"max_context": 500}),
    ("--context=logs", {"context": ("logs",)}),
])
def test_each_option(line, expected):
    options = parse_ask(line, "q")
    assert {key: getattr(options, key) for key in expected} == expected


def test_a_double_dash_ends_the_options():
    assert parse_ask("-- -v is verbose?").question == "-v is verbose?"


@pytest.mark.parametrize("line, message", [
    ("--contxt logs", "No such option '--contxt'"),
    ("--new -c", "use only one of -c/--continue, --conversation ID and --new"),
    ("--conversation 3 --new", "use only one of"),
    ("--conversation abc", "'abc' is not a valid integer"),
    ("--out 1x", "'1x' is not a Python variable name"),
    ("--context my-logs", "'my-logs' is not a Python variable name"),
    ("--max-context -5", "-5 is not in the range x>=0"),
])
def test_bad_options_are_one_line_errors_pointing_at_help(line, message):
    with pytest.raises(NotebookError) as raised:
        parse_ask(line, "q")
    assert message in raised.value.message
    assert raised.value.message.endswith("(see `%ask --help`)")
    assert "\n" not in raised.value.message


def test_a_misspelt_option_is_named_even_in_a_cell_magic():
    with pytest.raises(NotebookError, match="No such option '--contex'"):
        parse_ask("--contex logs", "why?")


def test_cell_magic_refuses_a_question_on_its_line():
    with pytest.raises(NotebookError, match="move 'why now' into the cell"):
        parse_ask("--new why now", "logs below")


def test_help_prints_usage_and_parses_to_nothing(capsys):
    assert parse_ask("--help") is None
    help_text = capsys.readouterr().out
    assert help_text.startswith("Usage: %ask [OPTIONS] [QUESTION]")
    for option in ("--continue", "--conversation ID", "--new", "--context NAME", "--out NAME", "--error"):
        assert option in help_text


@pytest.mark.parametrize("line, command", [
    ("login", Command("login", {"url": None, "email": None})),
    ("login http://aisystant.internal:3001 -e ops@example.com",
     Command("login", {"url": "http://aisystant.internal:3001", "email": "ops@example.com"})),
    ("register localhost:3001", Command("register", {"url": "localhost:3001"})),
    ("url", Command("url")),
    ("status", Command("status")),
    ("new", Command("new")),
    ("export 'incident 12.md'", Command("export", {"path": "incident 12.md", "conversation_id": None})),
    ("export out.md --conversation 7", Command("export", {"path": "out.md", "conversation_id": 7})),
])
def test_aisystant_subcommands(line, command):
    assert parse_admin(line) == command


def test_aisystant_alone_lists_its_subcommands_in_order(capsys):
    assert parse_admin("") is None
    commands = [line.split()[0] for line in capsys.readouterr().out.split("Commands:\n")[1].splitlines() if line.strip()]
    assert commands == ["login", "register", "url", "status", "new", "export"]


@pytest.mark.parametrize("line, message", [
    ("logon", "No such command 'logon'"),
    ("export", "Missing argument 'PATH'"),
    ("login 'http://x", "cannot read the options (No closing quotation): check the quotes"),
])
def test_bad_aisystant_lines_are_one_line_errors(line, message):
    with pytest.raises(NotebookError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_admin(line)
