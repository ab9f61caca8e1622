"""Running the field's own tools (llama.cpp's converter, docker, compose) with our error contract.

Their logs are long (a conversion prints every tensor, a build every layer) and their verdict is one line of
it. `run_tool` keeps the last lines of stderr, passes the log through when asked (builds take minutes, a person
watches), and on failure raises one `error: <what>: ...` line carrying the tool's own verdict.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import deque
from pathlib import Path

from ..errors import fail

# A traceback's exception line ("NotImplementedError: Architecture ..."), or a tool's own error line.
_VERDICT = re.compile(r"^[\w.]+(Error|Exception)\b.*:")
_ERROR_PREFIXES = ("error:", "ERROR", "failed to solve")


def tool_verdict(lines: list[str]) -> str:
    """The tool's own verdict: the last exception or error line, else its last line (300 characters at most)."""
    for line in reversed(lines):
        if _VERDICT.match(line) or line.startswith(_ERROR_PREFIXES):
            return line[:300]
    return lines[-1][:300] if lines else "no error output"


def run_tool(command: list[str], where: str | Path, env: dict[str, str] | None = None, passthrough: bool = False,
             tool: str = "") -> None:
    """Run `command`; stdout is discarded unless `passthrough` (then stdout and stderr are shown as they come).
    Non-zero exit: one error line, `error: <where>: [<tool> ]failed (exit N): <tool_verdict of its stderr>`."""
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(command, stdout=None if passthrough else subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, errors="replace", env=env) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if passthrough:
                sys.stderr.write(line)
            if line.strip():
                tail.append(line.strip())
    if proc.returncode != 0:
        fail(where, f"{tool + ' ' if tool else ''}failed (exit {proc.returncode}): {tool_verdict(list(tail))}")
