"""Every command's --help has a one-line summary and an example; `selectlens --help` lists the commands in
the order a new user meets them."""

from click.testing import CliRunner

from selectlens.cli import COMMAND_ORDER, cli


def _commands():
    for name, cmd in cli.commands.items():
        yield [name], cmd
        for sub, subcmd in getattr(cmd, "commands", {}).items():
            yield [name, sub], subcmd


def test_every_command_has_a_summary_and_an_example():
    runner = CliRunner()
    for path, cmd in _commands():
        out = runner.invoke(cli, [*path, "--help"]).output
        assert cmd.get_short_help_str(limit=200).strip(), path
        example = [line for line in out.splitlines() if line.strip().startswith("Example:")]
        assert example and f"selectlens {path[0]}" in out.split("Example:")[1], (path, out[-300:])


def test_top_level_help_lists_commands_in_order():
    out = CliRunner().invoke(cli, ["--help"]).output
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.startswith("  ") and line.split()]
    assert listed == COMMAND_ORDER
