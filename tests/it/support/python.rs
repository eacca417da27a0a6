//! The Python clients the tests drive (the official Svix SDK, schemathesis), in a virtualenv
//! made on first use from `tests/python/requirements.txt` (PyPI), so `cargo test` needs no set-up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The virtualenv's python, with the requirements installed (once per requirements file).
pub fn python() -> PathBuf {
    static READY: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut ready = READY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(python) = ready.as_ref() {
        return python.clone();
    }
    let venv = root().join(".tools/venv-tests");
    let python = venv.join("bin/python");
    let requirements = root().join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        if !python.exists() {
            let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap();
            assert!(made.success(), "python3 -m venv {} failed", venv.display());
        }
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(installed.success(), "installing {} failed", requirements.display());
        std::fs::write(&stamp, &wanted).unwrap();
    }
    *ready = Some(python.clone());
    python
}

/// A script under `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    root().join("tests/python").join(name)
}
