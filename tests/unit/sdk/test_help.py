import pytest

from aisystant_sdk.cli import cli

COMMANDS = [
    ["login"],
    ["register"],
    ["logout"],
    ["whoami"],
    ["ask"],
    ["chat"],
    ["conversations"],
    ["conversations", "list"],
    ["conversations", "show"],
    ["conversations", "rename"],
    ["conversations", "delete"],
    ["conversations", "export"],
]


def test_root_help_lists_every_command_in_order(run):
    result = run("--help")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert listed[:7] == ["login", "register", "logout", "whoami", "ask", "chat", "conversations"]


def test_root_help_documents_exit_codes_and_environment(run):
    output = run("--help").output
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 ", "130 "):
        assert f"\n    {code}" in output
    for variable in ("AISYSTANT_URL", "AISYSTANT_TOKEN", "AISYSTANT_CONFIG_DIR"):
        assert variable in output


def test_short_help_flag(run):
    assert run("-h").output == run("--help").output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_has_an_example(run, command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output
    assert f"Usage: aisystant {' '.join(command)}" in result.output


def test_version(run):
    from aisystant_sdk import __version__

    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"aisystant, version {__version__}"


def test_help_shows_no_long_line(run):
    for command in COMMANDS:
        for line in run(*command, "--help").output.splitlines():
            assert len(line) <= 100, line


def test_cli_group_is_the_console_script_target():
    from aisystant_sdk.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert cli.name


def test_bash_completion_script_from_the_documented_line(run):
    result = run(env={"_AISYSTANT_COMPLETE": "bash_source"})
    assert result.exit_code == 0
    assert "complete -o nosort -F _aisystant_completion aisystant" in result.output


def test_completion_completes_commands_and_options(run):
    words = {"_AISYSTANT_COMPLETE": "bash_complete", "COMP_WORDS": "aisystant conv", "COMP_CWORD": "1"}
    assert run(env=words).output.splitlines() == ["plain,conversations"]
    words.update(COMP_WORDS="aisystant conversations list --j", COMP_CWORD="3")
    assert run(env=words).output.splitlines() == ["plain,--json"]


def test_root_help_shows_the_completion_line(run):
    assert 'eval "$(_AISYSTANT_COMPLETE=bash_source aisystant)"' in run("--help").output
