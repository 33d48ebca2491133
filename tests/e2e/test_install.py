"""`make install PREFIX=...` gives a C library packaged the usual way: a
shared library named by its SONAME with the usual symlinks and no debug
info, an archive, the header, and a pkg-config file a C user builds with,
shared, against the archive, and fully static."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)

SONAME = "libupcase.so.0"


def cargo_version():
    for line in (ROOT / "Cargo.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("no version in Cargo.toml")


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


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


def test_installs_library_header_and_pc(prefix):
    for rel in ["lib/libupcase.a", "include/upcase.h", "lib/pkgconfig/upcase.pc"]:
        assert (prefix / rel).is_file(), rel
    assert (prefix / "include/upcase.h").read_bytes() == (ROOT / "include/upcase.h").read_bytes()
    version = pkg_config(prefix, "--modversion")
    assert version == [cargo_version()]


def test_the_shared_library_has_its_soname_and_the_usual_symlinks(prefix):
    lib = prefix / "lib"
    real = lib / f"libupcase.so.{cargo_version()}"
    assert real.is_file() and not real.is_symlink()
    assert os.readlink(lib / SONAME) == real.name
    assert os.readlink(lib / "libupcase.so") == SONAME
    assert f"Library soname: [{SONAME}]" in readelf("-d", str(real))


def test_the_shared_library_carries_no_debug_info(prefix):
    sections = readelf("-S", str(prefix / "lib" / SONAME))
    assert ".text" in sections
    assert ".debug_" not in sections


@pytest.mark.parametrize("mode", ["shared", "archive", "static"])
def test_a_c_program_builds_with_pkg_config_and_runs(prefix, tmp_path, mode):
    """shared: `cc prog.c $(pkg-config --cflags --libs upcase)`; static:
    `cc -static prog.c $(pkg-config --static --cflags --libs upcase)`;
    archive: libupcase.a named in place of -lupcase, with the C library
    and the rest linked dynamically."""
    cc = shutil.which("cc")
    assert cc, "a C compiler is needed"
    flags = pkg_config(prefix, "--cflags", "--libs", *(["--static"] if mode != "shared" else []))
    exe = tmp_path / "hello"
    cmd = [cc, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
           *(["-static"] if mode == "static" else []),
           str(ROOT / "examples/c/hello.c"), "-o", str(exe), *flags, "-lpthread"]
    if mode == "archive":
        cmd = [a for a in cmd if not a.startswith("-Wl,-rpath")]
        cmd = [a if a != "-lupcase" else str(prefix / "lib/libupcase.a") for a in cmd]
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "From Server: HELLO, SOCKETS\n"
    dynamic = readelf("-d", str(exe))
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    if mode == "shared":
        assert SONAME in needed
        deps = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
        assert f"{SONAME} => {prefix / 'lib' / SONAME}" in deps
    elif mode == "archive":
        assert needed and not [n for n in needed if "upcase" in n]
    else:
        assert needed == [] and "INTERP" not in readelf("-l", str(exe))
