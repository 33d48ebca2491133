"""`pip install ./bindings/python` works for a user, and the two libraries
keep to themselves: the extension carries no `upcase_*` C exports, and the
C library carries no Python symbols."""

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(600)


def dynamic_symbols(path):
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT / "bindings" / "python"),
                    "-w", str(out)], check=True, timeout=580)
    wheels = list(out.glob("upcase-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_is_abi3_with_stubs(wheel):
    assert "-abi3-" in wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    for want in ["upcase/__init__.py", "upcase/__init__.pyi", "upcase/py.typed"]:
        assert want in names
    assert any(n.startswith("upcase/_upcase") and n.endswith(".so") for n in names)


def test_pip_install_into_a_fresh_venv_and_use_it(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    code = ("import upcase\n"
            "with upcase.Server(port=0) as s:\n"
            "    print(upcase.tcp_request('127.0.0.1', s.port, 'from a fresh venv'))\n")
    run = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr
    assert run.stdout == "FROM A FRESH VENV\n"


def test_the_extension_carries_no_c_exports_and_the_c_library_no_python():
    import upcase._upcase as native

    ext = dynamic_symbols(native.__file__)
    assert "PyInit__upcase" in ext
    assert not [s for s in ext if s.startswith("upcase_")], "C exports leaked into the extension"
    lib = dynamic_symbols(ROOT / "target" / "release" / "libupcase.so")
    assert "upcase_tcp_request" in lib
    assert not [s for s in lib if s.startswith("Py")], "Python symbols in libupcase.so"
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(ROOT / "target" / "release" / "libupcase.so")],
                               capture_output=True, text=True, check=True).stdout
    assert "Py" not in undefined
