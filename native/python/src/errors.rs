//! Failures as Python sees them: `OSError` (the subclass its `errno`
//! selects, like the standard library's) with `errno`, `strerror` and the
//! bus's pathname as `filename`.

use std::path::Path;

use pyo3::exceptions::PyOSError;
use pyo3::PyErr;

/// `OSError(errno, strerror(errno), path)`.
pub(crate) fn os_error(errno: i32, path: Option<&Path>) -> PyErr {
    let text = nix::errno::Errno::from_raw(errno).desc();
    match path {
        Some(path) => PyOSError::new_err((errno, text, path.as_os_str().to_os_string())),
        None => PyOSError::new_err((errno, text)),
    }
}

/// A core error as an `OSError` about the bus at `path`.
pub(crate) fn bus_error(e: &bus_core::Error, path: Option<&Path>) -> PyErr {
    os_error(e.errno(), path)
}
