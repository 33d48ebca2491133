"""The Python package as published: the wheel of `make wheel` (manylinux,
stripped, small, with its metadata) works in a fresh virtualenv with no
Rust toolchain; the sdist of `make sdist` holds what the build needs and no
more, and says so plainly when Rust is missing. The two native libraries
keep to themselves: the extension carries no `upcase_*` C exports, and the
C library carries no Python symbols."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import e2e_support
from e2e_support import EXAMPLES, LINE, ServerProc, fmt_addr, upper_ascii

ROOT = Path(__file__).resolve().parents[3]
WHEELS = ROOT / "build" / "wheels"
pytestmark = pytest.mark.timeout(300)

MAX_WHEEL_BYTES = 2_000_000
OLDEST_GLIBC_MINOR = 28  # manylinux_2_28: glibc 2.28 or later


def dynamic_symbols(path):
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]


def built(pattern: str, how: str) -> Path:
    found = sorted(WHEELS.glob(pattern))
    assert len(found) == 1, f"want one {pattern} in {WHEELS}, found {found}: run `{how}`"
    return found[0]


@pytest.fixture(scope="module")
def wheel() -> Path:
    return built("upcase-*.whl", "make wheel")


@pytest.fixture(scope="module")
def sdist() -> Path:
    return built("upcase-*.tar.gz", "make sdist")


def path_without_rust() -> str:
    """PATH less every directory that holds cargo or rustc."""
    keep = [d for d in os.environ["PATH"].split(os.pathsep)
            if d and not any(os.access(os.path.join(d, tool), os.X_OK) for tool in ("cargo", "rustc"))]
    path = os.pathsep.join(keep)
    assert shutil.which("cargo", path=path) is None and shutil.which("rustc", path=path) is None
    return path


def test_the_wheel_is_abi3_manylinux_and_holds_the_package(wheel):
    assert re.fullmatch(r"upcase-[\d.]+-cp39-abi3-manylinux_2_(\d+)_x86_64\.whl", wheel.name), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    for want in ["upcase/__init__.py", "upcase/__init__.pyi", "upcase/py.typed"]:
        assert want in names
    assert any(n.startswith("upcase/_upcase") and n.endswith(".so") for n in names)


def test_auditwheel_accepts_the_wheel_as_manylinux_2_28_or_older(wheel):
    auditwheel = Path(sys.executable).with_name("auditwheel")
    assert auditwheel.exists(), "auditwheel is missing: `make wheel` installs it"
    out = subprocess.run([str(auditwheel), "show", str(wheel)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tag = re.search(r'consistent with\s+the following platform tag:\s+"manylinux_2_(\d+)_x86_64"', out.stdout)
    assert tag, out.stdout
    assert int(tag.group(1)) <= OLDEST_GLIBC_MINOR, out.stdout


def test_the_wheel_is_small_and_its_extension_stripped(wheel, tmp_path):
    assert wheel.stat().st_size < MAX_WHEEL_BYTES
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.startswith("upcase/_upcase") and n.endswith(".so"))
        ext = Path(z.extract(name, tmp_path))
    sections = subprocess.run(["readelf", "-S", "-W", str(ext)], capture_output=True, text=True, check=True).stdout
    assert ".text" in sections
    assert ".symtab" not in sections and ".debug_" not in sections
    assert "PyInit__upcase" in dynamic_symbols(ext)


def test_the_wheel_metadata_has_the_readme_urls_and_licenses(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(meta_name).decode())
        licenses = {Path(n).name: z.read(n) for n in names if ".dist-info/licenses/" in n}
    assert meta["Description-Content-Type"].startswith("text/markdown")
    readme_title = (ROOT / "README.md").read_text().splitlines()[0]
    assert meta.get_payload().lstrip().startswith(readme_title)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL", []))
    assert {"Homepage", "Source", "Issues"} <= set(urls), urls
    assert all(u.startswith("https://") for u in urls.values()), urls
    assert meta["License-Expression"] == "MIT OR Apache-2.0"
    assert licenses == {n: (ROOT / n).read_bytes() for n in ("LICENSE-MIT", "LICENSE-APACHE")}


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A new virtualenv with the wheel installed, and an environment whose
    PATH has the venv and no Rust toolchain."""
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=120)
    env = {k: v for k, v in e2e_support.child_env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(env_dir / "bin"), path_without_rust()])
    return py, env


def test_the_installed_wheel_works_without_rust(fresh_venv, tmp_path):
    py, env = fresh_venv
    code = ("import upcase\n"
            "print(upcase.__file__)\n"
            "with upcase.Server(port=0) as s:\n"
            "    print(upcase.tcp_request('127.0.0.1', s.port, 'from a fresh venv'))\n")
    run = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    where, reply = run.stdout.splitlines()
    assert where.startswith(str(py.parents[1]))
    assert reply == "FROM A FRESH VENV"


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_the_slide_programs_run_on_the_installed_wheel(fresh_venv, proto, monkeypatch):
    py, env = fresh_venv
    monkeypatch.setattr(e2e_support, "child_env", lambda: dict(env))
    server = ServerProc([str(py), str(EXAMPLES / f"{proto.upper()}Server.py"), "0", "127.0.0.1"], proto)
    try:
        client = e2e_support.run([str(py), str(EXAMPLES / f"{proto.upper()}Client.py"), "127.0.0.1",
                                  str(server.port)], (LINE + "\n").encode())
        assert client.returncode == 0, client.stderr
        assert client.stdout.decode() == f"From Server: {upper_ascii(LINE)}\n"
        server.out.wait_for(server.client_pattern("127.0.0.1"), e2e_support.LINE_TIMEOUT)
        assert fmt_addr("127.0.0.1", server.port) in server.out.text()
        server.stop()
    finally:
        server.kill()


def test_the_sdist_holds_the_sources_and_nothing_else(sdist):
    with tarfile.open(sdist) as t:
        names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    for want in ["pyproject.toml", "PKG-INFO", "Cargo.toml", "Cargo.lock", "build.rs", "cbindgen.toml",
                 "src/lib.rs", "bindings/python/Cargo.toml", "bindings/python/src/lib.rs",
                 "python/upcase/__init__.py", "python/upcase/__init__.pyi", "build_backend/upcase_build.py",
                 "README.md", "LICENSE-MIT", "LICENSE-APACHE"]:
        assert want in names, want
    stray = [n for n in names if n.split("/")[0] in {"bench", "fuzz", ".ci", "tests", "include", "examples"}
             and not n.startswith("examples/rust/")]
    stray += [n for n in names if "/tests/" in n or n.endswith((".svg", ".png", ".c"))]
    assert stray == []


def test_building_the_sdist_without_rust_stops_and_says_why(sdist, tmp_path):
    """The frontend runs the sdist's own backend (here without isolation,
    so no package index is needed): it must not fetch a Rust toolchain."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), path_without_rust()]))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                          str(sdist), "-w", str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode != 0
    assert "building from source needs Rust" in run.stdout + run.stderr, run.stdout + run.stderr
    assert not list(tmp_path.glob("*.whl"))


def test_the_extension_carries_no_c_exports_and_the_c_library_no_python():
    import upcase._upcase as native

    ext = dynamic_symbols(native.__file__)
    assert "PyInit__upcase" in ext
    assert not [s for s in ext if s.startswith("upcase_")], "C exports leaked into the extension"
    clib = ROOT / "build" / "lib" / "libupcase.so"
    lib = dynamic_symbols(clib)
    assert "upcase_tcp_request" in lib
    assert not [s for s in lib if s.startswith("Py")], "Python symbols in libupcase.so"
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(clib)],
                               capture_output=True, text=True, check=True).stdout
    assert "Py" not in undefined


@pytest.mark.parametrize("launcher", ["module", "scripts"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_python_m_upcase_runs_on_the_installed_wheel(fresh_venv, proto, launcher, monkeypatch):
    """`python -m upcase server|client` and the console scripts
    upcase-server / upcase-client, from the wheel in a venv with no Rust."""
    py, env = fresh_venv
    monkeypatch.setattr(e2e_support, "child_env", lambda: dict(env))
    bindir = py.parent
    server_argv = [str(py), "-m", "upcase", "server"] if launcher == "module" else [str(bindir / "upcase-server")]
    client_argv = [str(py), "-m", "upcase", "client"] if launcher == "module" else [str(bindir / "upcase-client")]
    udp = ["--udp"] if proto == "udp" else []
    server = ServerProc(server_argv + udp + ["0", "127.0.0.1"], proto)
    try:
        client = e2e_support.run(client_argv + udp + ["127.0.0.1", str(server.port)], (LINE + "\n").encode())
        assert client.returncode == 0, client.stderr
        assert client.stdout.decode() == f"From Server: {upper_ascii(LINE)}\n"
        server.stop()
    finally:
        server.kill()
