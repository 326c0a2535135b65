//! The Python module `bus` (its native part, `bus._bus`): python-bus's
//! `Bus` class over the Rust core, and the subscription behind
//! `bus.listen`. Glue only: every protocol step is the core's.
//!
//! Blocking calls release the GIL and wait in slices of [`SLICE`], looking
//! for signals in between (so Ctrl-C raises `KeyboardInterrupt` promptly);
//! a call cut short that way leaves the bus before it raises.
#![deny(unsafe_code)]

mod class;
mod errors;
mod listen;
mod timeout;

use std::time::Duration;

use pyo3::prelude::*;

/// How long a blocked call waits before it looks for signals again.
const SLICE: Duration = Duration::from_millis(20);

#[pymodule]
fn _bus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<class::PyBus>()?;
    m.add_class::<listen::PySubscription>()?;
    m.add("MAX_MESSAGE_LEN", bus_core::MAX_MESSAGE_LEN)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
