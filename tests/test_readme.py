"""The README's single-run commands compose and pass the start-up check (the manual stays true)."""

import re
import shlex
from pathlib import Path

import pytest

from src.config import validate
from tests.conftest import compose_config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
COMMANDS = [
    line.split("#")[0].strip()
    for line in re.findall(r"^python -m src\.run(?! -m)[^\n]*", README, re.M)
]


def test_the_readme_shows_commands():
    assert len(COMMANDS) >= 8


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_composes_and_validates(command, tmp_path):
    args = shlex.split(command)[3:]
    if args[:1] == ["--cfg"]:
        args = args[2:]  # Hydra's own flag and its value
    # the README's data folders are a user's; the start-up check wants them to exist
    root = Path(__file__).resolve().parents[1]
    overrides = [
        f"{a.split('=')[0]}={tmp_path}"
        if a.startswith(("data.root=", "data.path=")) and not (root / a.split("=", 1)[1]).is_dir()
        else a
        for a in args
    ]
    validate(compose_config(*overrides))
