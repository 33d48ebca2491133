"""Every command in README.md works as pasted: the shell blocks run as they
stand, the Python and Rust programs run and print what their comments say.

The shell blocks run in a network namespace of their own (as root, which
CI is), with only loopback up: the README's fixed port 12000 then collides
with nothing, and nothing a block does can leave the machine. HOME is a
temporary folder, so `make install PREFIX=$HOME/.local` installs there."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PYTHON = ROOT / ".venv" / "bin" / "python"
pytestmark = pytest.mark.timeout(600)


def blocks(lang):
    """The fenced blocks of README.md in language `lang`, in order."""
    text = README.read_text()
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```$", text, flags=re.S | re.M)]


def in_namespace(script, tmp_path, timeout=500):
    """Runs `script` with bash (-e, pipefail) from the repository's root, in
    a network namespace with only loopback, HOME in `tmp_path`."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("the README test runs its commands in a network namespace: it needs root, unshare and ip")
    env = dict(os.environ, HOME=str(tmp_path))
    # The toolchain stays where the real HOME has it.
    env.setdefault("RUSTUP_HOME", str(Path.home() / ".rustup"))
    env.setdefault("CARGO_HOME", str(Path.home() / ".cargo"))
    env.pop("PKG_CONFIG_PATH", None)
    body = "set -euo pipefail\nip link set lo up\n" + script
    return subprocess.run(["unshare", "-n", "bash", "-c", body], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def ran(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_first_lines_give_the_demo_and_the_tests():
    first = README.read_text().split("\n")[:6]
    assert first[0] == "# upcase"
    commands = [line.split("#")[0].strip() for line in blocks("sh")[0].splitlines()]
    assert commands == ["make demo", "make test"]


def test_the_first_screen_runs_a_server_and_a_client_in_c_and_in_python():
    text = README.read_text()
    first_screen = text.split("\n## C\n")[0]
    assert len(first_screen.splitlines()) <= 60, "the quick start is not on the first screen"
    assert "build/c/tcp_client" in first_screen and "UDPClient.py" in first_screen
    assert len(text.splitlines()) <= 300


def test_quick_start_in_c(tmp_path):
    out = ran(in_namespace(blocks("sh")[1], tmp_path))
    assert "From Server: HELLO, SOCKETS" in out


def test_quick_start_in_python(tmp_path):
    out = ran(in_namespace(blocks("sh")[2], tmp_path))
    assert "From Server: HELLO, PYTHON" in out


def test_c_install_shared_and_static(tmp_path):
    try:
        out = ran(in_namespace(blocks("sh")[3], tmp_path))
    finally:
        for built in ("hello", "hello-static"):
            (ROOT / built).unlink(missing_ok=True)
    assert out.count("From Server: HELLO, SOCKETS") == 2, out
    assert (tmp_path / ".local" / "lib" / "libupcase.so.0").is_symlink()


def test_the_c_excerpt_is_hello_c():
    excerpt = [line for line in blocks("c")[0].splitlines() if line.strip()]
    source = (ROOT / "examples" / "c" / "hello.c").read_text().splitlines()
    at = 0
    for line in excerpt:
        assert line in source[at:], f"not in examples/c/hello.c (in this order): {line!r}"
        at = source.index(line, at) + 1


def test_the_command_line_examples(tmp_path):
    out = ran(in_namespace(blocks("sh")[4], tmp_path))
    assert "usage: tcp_client [OPTIONS] [HOST [PORT]]" in out
    assert "usage: tcp_server [OPTIONS] [PORT [HOST]]" in out


def test_the_tls_example_makes_a_ca_and_talks_tls(tmp_path):
    out = ran(in_namespace(blocks("sh")[5], tmp_path))
    assert "From Server: HELLO, TLS" in out


def test_the_python_example_prints_what_its_comments_say(tmp_path):
    program = blocks("python")[0]
    script = tmp_path / "example.py"
    script.write_text(program)
    out = ran(in_namespace(f"{PYTHON} {script}", tmp_path, timeout=60))
    # What each `print(...)  # comment` line says it prints.
    said = [line.split("#", 1)[1].strip() for line in program.splitlines()
            if line.strip().startswith("print(") and "#" in line]
    assert out.splitlines() == said, (out, said)


def test_the_rust_example_runs_as_a_dependent_crate(tmp_path):
    toml = blocks("toml")[0].replace("path/to/upcase", str(ROOT))
    crate = tmp_path / "example"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "readme-example"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
        + toml + "\n[workspace]\n")
    (crate / "src" / "main.rs").write_text(blocks("rust")[0])
    shutil.copy(ROOT / "Cargo.lock", crate / "Cargo.lock")
    env = dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target" / "readme-example"))
    result = subprocess.run(["cargo", "run", "-q", "--offline"], cwd=crate, env=env, capture_output=True,
                            text=True, timeout=500)
    assert ran(result).strip() == "HELLO"
