from conftest import kiln


def test_version():
    p = kiln("version", check=True)
    assert p.stdout.decode().startswith("kiln ")


def test_unknown_command_is_one_clear_line():
    p = kiln("frobnicate")
    assert p.returncode == 2
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "frobnicate" in lines[0]


def test_help_lists_commands():
    p = kiln("--help", check=True)
    assert b"sandbox" in p.stdout
