"""`make install PREFIX=...` gives a library a C user builds against with
`cc prog.c $(pkg-config --cflags --libs upcase)`, both shared and static."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("prefix")
    subprocess.run(["make", "-C", str(ROOT), "install", f"PREFIX={prefix}"], check=True,
                   stdout=subprocess.DEVNULL, timeout=280)
    return prefix


def pkg_config(prefix, *args):
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    out = subprocess.run(["pkg-config", *args, "upcase"], env=env, check=True, capture_output=True, text=True)
    return out.stdout.split()


def test_installs_library_header_and_pc(prefix):
    for rel in ["lib/libupcase.so", "lib/libupcase.a", "include/upcase.h", "lib/pkgconfig/upcase.pc"]:
        assert (prefix / rel).is_file(), rel
    assert (prefix / "include/upcase.h").read_bytes() == (ROOT / "include/upcase.h").read_bytes()
    version = pkg_config(prefix, "--modversion")
    cargo = (ROOT / "Cargo.toml").read_text()
    assert f'version = "{version[0]}"' in cargo


@pytest.mark.parametrize("static", [False, True], ids=["shared", "static"])
def test_a_c_program_builds_with_pkg_config_and_runs(prefix, tmp_path, static):
    cc = shutil.which("cc")
    assert cc, "a C compiler is needed"
    flags = pkg_config(prefix, "--cflags", "--libs", *(["--static"] if static else []))
    exe = tmp_path / "hello"
    cmd = [cc, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
           str(ROOT / "examples/c/hello.c"), "-o", str(exe), *flags, "-lpthread"]
    if static:
        # Only the archive: no libupcase.so next to it to pick instead.
        cmd = [a for a in cmd if not a.startswith("-Wl,-rpath")]
        cmd = [a if a != "-lupcase" else str(prefix / "lib/libupcase.a") for a in cmd]
    subprocess.run(cmd, check=True, timeout=60)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "From Server: HELLO, SOCKETS\n"
    deps = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
    if static:
        assert "libupcase" not in deps
    else:
        assert str(prefix / "lib" / "libupcase.so") in deps
