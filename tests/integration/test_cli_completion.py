"""The bash completion script: commands, options, values."""
import os
import subprocess

import pytest

from conftest import ROOT

BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
SCRIPT = os.path.join(ROOT, "shell-completion", "bash", "kiln")


def complete(line):
    words = line.split(" ")
    script = """
source %s
source %s
COMP_WORDS=(%s); COMP_CWORD=%d; COMP_LINE=%s; COMP_POINT=${#COMP_LINE}
_kiln
printf '%%s\\n' "${COMPREPLY[@]}"
""" % (BASH_COMPLETION, SCRIPT, " ".join("'%s'" % w for w in words), len(words) - 1, "'%s'" % line)
    p = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                       env=dict(os.environ, PATH="/usr/bin:/bin"))
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode().split()


@pytest.mark.skipif(not os.path.exists(BASH_COMPLETION), reason="bash-completion is not installed")
def test_completion():
    assert complete("kiln ru") == ["run"]
    assert set(complete("kiln w")) == {"watch", "workers", "worker"}
    assert "--detach" in complete("kiln run --d")
    assert complete("kiln ps --state ru") == ["running"]
    assert complete("kiln up --network n") == ["none", "nat"]
    assert "--json" in complete("kiln workers --")
    # After `kiln run --` it completes commands, not kiln's options.
    assert "bash" in complete("kiln run -- bas")
