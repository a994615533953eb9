"""The README's "Using it" commands run as written, in order, on a fresh copy of the repository's job files,
against the local stand-in server: the examples cannot rot.

The only line not run is ``export JINA_API_KEY=jina_...``: the test's environment holds a fake key of the right
shape and ``JINA_API_BASE`` pointing at the stand-in server instead.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jobtools import REPO, read_output

pytestmark = [pytest.mark.slow, pytest.mark.ray]

COMMAND_TIMEOUT_S = 240.0


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The shell commands of the fenced ``bash`` blocks of the "Using it" section, comments stripped."""
    text = readme.read_text(encoding="utf-8")
    section = re.search(r"^## Using it\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no '## Using it' section"
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section.group(1), re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()  # a comment after two spaces
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_the_readme_commands_are_found():
    commands = readme_commands()
    assert commands[0].startswith("export JINA_API_KEY=")
    assert any(c.startswith("embedder sample-corpus data/sample") for c in commands)
    assert any(c.startswith("embedder run ") for c in commands)
    assert any(c.startswith("embedder search ") for c in commands)


def test_every_readme_command_runs_as_written(tmp_path, jina, env):
    work = tmp_path / "clone"
    work.mkdir()
    shutil.copytree(REPO / "jobs", work / "jobs")  # what a fresh clone has; data/ and out/ are made by the commands
    run_env = {**env, "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")}
    ran = []
    for command in readme_commands():
        if command.startswith("export JINA_API_KEY="):
            continue  # the environment has a fake key for the stand-in server
        assert shlex.split(command)[0] == "embedder", f"not an embedder command: {command}"
        result = subprocess.run(["bash", "-c", command], cwd=work, env=run_env, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT_S, start_new_session=True)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{output[-6000:]}"
        assert "Traceback" not in output, f"`{command}` printed a traceback:\n{output[-6000:]}"
        ran.append(command)
    assert len(ran) >= 10
    assert read_output(str(work / "out/embeddings")).num_rows == 2000
    assert read_output(str(work / "out/small")).column("vector").type.list_size == 256
    assert jina.stats()["inputs"] >= 3 * 2000  # the first run, the override, the restart (and the Milvus job)
