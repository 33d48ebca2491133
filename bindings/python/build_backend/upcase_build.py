"""The build backend: maturin's, without its fallback of downloading a Rust
toolchain when cargo is missing.

Building upcase from source compiles its Rust extension, so it needs cargo.
Without cargo on PATH, the build stops at its first step and says what to do.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Mapping, Optional

# maturin reads this before it would fetch a toolchain.
os.environ["MATURIN_NO_INSTALL_RUST"] = "1"

import maturin  # noqa: E402
from maturin import build_editable, build_sdist, build_wheel, get_requires_for_build_sdist  # noqa: E402,F401

NO_CARGO = """
upcase: building from source needs Rust (cargo and rustc 1.82 or later) on PATH,
and there is no `cargo` on PATH. Install Rust (your distribution's cargo and
rustc packages, or rustup), then install again; or install a prebuilt wheel.
"""


Settings = Optional[Mapping[str, Any]]


def _need_cargo() -> None:
    if shutil.which("cargo") is None:
        raise SystemExit(NO_CARGO)


# A frontend calls the first with build isolation, goes straight to the
# second without: both check.
def get_requires_for_build_wheel(config_settings: Settings = None) -> list:
    _need_cargo()
    return maturin.get_requires_for_build_wheel(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Settings = None) -> str:
    _need_cargo()
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


get_requires_for_build_editable = get_requires_for_build_wheel
prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel
