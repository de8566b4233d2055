"""`reparam <command> --help` of every command: what the command does and what each of its settings does, never
Hydra's generic page ("<app> is powered by Hydra."). Every top-level key of the printed settings is documented
above them (as `key:`, `key.field` or `key=`)."""
import re
from concurrent.futures import ThreadPoolExecutor

from reparam.cli import COMMANDS

from .conftest import run_cli

SETTINGS = "== Settings (key=value) =="


def undocumented(text: str) -> list[str]:
    """The top-level keys printed under SETTINGS that the text above it never documents."""
    doc, _, dump = text.partition(SETTINGS)
    keys = re.findall(r"^(\w+):", dump.split("Powered by Hydra")[0], flags=re.M)
    assert keys, "no settings printed"
    return [k for k in keys if not re.search(rf"(^|[\s`(\[]){k}[:.=]", doc, flags=re.M)]


def test_every_command_documents_what_it_does_and_each_setting():
    with ThreadPoolExecutor(2) as pool:  # one interpreter per command (Hydra parses sys.argv once per process)
        procs = dict(zip(COMMANDS, pool.map(lambda c: run_cli(["reparam.cli", c, "--help"], timeout=120), COMMANDS)))
    for command, proc in procs.items():
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        text = proc.stdout
        assert "is powered by Hydra" not in text, command  # the generic page
        assert SETTINGS in text, command
        assert "== Configuration groups ==" not in text, command  # Hydra's list of every group on the search path
        assert not undocumented(text), (command, undocumented(text))
        first = text.splitlines()[0]
        assert first.strip() and not first.startswith("=="), (command, first)  # opens with what the command does
