//! Generates the C header `upcase.h` from `src/ffi` with cbindgen, into
//! OUT_DIR, when the C API (feature `capi`) is built.
//!
//! The build never writes into the source tree: `make lib` copies the header
//! into `include/`, where it is committed, and `make lint` fails when the
//! copy differs from the committed one.

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "capi")]
    header::generate();
}

#[cfg(feature = "capi")]
mod header {
    use std::env;
    use std::fs;
    use std::path::PathBuf;

    pub fn generate() {
        let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
        let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml is readable");
        let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
        let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets the version");
        let patch = env::var("CARGO_PKG_VERSION_PATCH").expect("cargo sets the version");
        let version = format!(
        "\n/* The version of this header; upcase_version() and upcase_version_hex() give the library's. */\n\
         #define UPCASE_VERSION_MAJOR {major}\n\
         #define UPCASE_VERSION_MINOR {minor}\n\
         #define UPCASE_VERSION_PATCH {patch}\n\
         #define UPCASE_VERSION_STRING \"{major}.{minor}.{patch}\"\n\
         #define UPCASE_VERSION_HEX ((UPCASE_VERSION_MAJOR << 16) | (UPCASE_VERSION_MINOR << 8) | UPCASE_VERSION_PATCH)\n"
    );
        let mut text = Vec::new();
        cbindgen::Builder::new()
            .with_config(config)
            .with_crate(&dir)
            .with_after_include(version)
            .generate()
            .expect("cbindgen generates the header")
            .write(&mut text);
        let text = parenthesize_negative_defines(&String::from_utf8(text).expect("the header is UTF-8"));
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        fs::write(out.join("upcase.h"), text).expect("OUT_DIR/upcase.h can be written");
    }

    /// `#define UPCASE_EINVAL -22` becomes `#define UPCASE_EINVAL (-22)`, so that
    /// `x-UPCASE_EINVAL` cannot turn into `x--22` in a C program; runs of blank
    /// lines (left where excluded items were) become one.
    fn parenthesize_negative_defines(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 64);
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("#define"), Some(name), Some(value))
                    if value.starts_with('-') && value[1..].chars().all(|c| c.is_ascii_digit()) =>
                {
                    out.push_str(&format!("#define {name} ({value})"));
                }
                _ if line.is_empty() && out.ends_with("\n\n") => continue, // one blank line is enough
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }
}
