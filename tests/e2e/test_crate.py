"""The Rust crate is a light dependency and can be published: a dependent
with `default-features = false` builds neither cbindgen nor a C library, no
build writes into upcase's source tree, and `cargo package` packs the
library's sources only. Offline: the lock file and cargo's registry cache
have what these builds need."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def cargo(*args, cwd, env=None):
    run = subprocess.run(["cargo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=580)
    assert run.returncode == 0, run.stderr
    return run.stdout + run.stderr


def source_state():
    """What git sees of the source tree (untracked and ignored files
    included), and the committed header's mtime."""
    status = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--",
                             ".", ":!target", ":!build", ":!.venv"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return status, (ROOT / "include" / "upcase.h").stat().st_mtime_ns


@pytest.fixture(scope="module")
def dependent(tmp_path_factory):
    """A crate depending on upcase with `default-features = false`, built."""
    tmp = tmp_path_factory.mktemp("dependent")
    (tmp / "src").mkdir()
    (tmp / "Cargo.toml").write_text(
        '[package]\nname = "dependent"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
        f'[dependencies]\nupcase = {{ path = "{ROOT}", default-features = false }}\n\n[workspace]\n')
    (tmp / "src" / "lib.rs").write_text("//! A dependent of upcase.\npub use upcase;\n")
    shutil.copy(ROOT / "Cargo.lock", tmp / "Cargo.lock")
    env = dict(os.environ, CARGO_TARGET_DIR=str(tmp / "target"))
    before = source_state()
    tree = cargo("tree", "--offline", "--edges", "normal,build", cwd=tmp, env=env)
    cargo("build", "--offline", cwd=tmp, env=env)
    return tmp, tree, before, source_state()


def test_the_dependent_builds_no_cbindgen(dependent):
    _, tree, _, _ = dependent
    assert "upcase v" in tree and "libc v" in tree
    assert "cbindgen" not in tree, tree


def test_the_dependent_builds_no_c_library(dependent):
    tmp, _, _, _ = dependent
    built = [p.name for p in (tmp / "target").rglob("*") if p.name.startswith("libupcase")]
    assert [n for n in built if n.endswith(".rlib")], built
    assert not [n for n in built if n.endswith((".so", ".a"))], built


def test_building_the_dependent_leaves_the_source_tree_alone(dependent):
    _, _, before, after = dependent
    assert after == before


def test_the_package_holds_the_sources_and_builds_without_touching_them():
    """`cargo package` verifies by building the packed crate, and fails if
    its build script wrote into the packed sources."""
    out = cargo("package", "--allow-dirty", "--offline", cwd=ROOT)
    assert "Verifying upcase" in out
    files = cargo("package", "--list", "--allow-dirty", "--offline", cwd=ROOT).split()
    assert {"src/lib.rs", "build.rs", "cbindgen.toml", "LICENSE-MIT", "LICENSE-APACHE", "README.md"} <= set(files)
    stray = [f for f in files if f.split("/")[0] in {"bench", "fuzz", "tests", ".ci", "bindings", "include"}]
    assert stray == []
