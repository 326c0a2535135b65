//! The Erlang binding of the bus core crate: glue only. Each NIF decodes its
//! arguments, calls the core, and encodes the result; failures come back as
//! `{error, Reason}` (see `term.rs`), `badarg` only for terms of the wrong
//! type.
//!
//! The native module is `bus_nif_N`, N the native version
//! (NATIVE_VERSION, see build.rs): two versions load side by side, so a hot
//! upgrade can hand running listeners over from one library to the next
//! (`listener.rs`) before the old one is unloaded.

mod admin;
mod listener;
mod spin;
mod term;
mod writer;

/// Load hook: installs this library's handler for the signal that
/// interrupts blocked listeners, at every load, so the process's handler
/// lives in the library loaded last, never in one about to be unloaded
/// (versions of this library are loaded side by side during an upgrade).
fn load(_env: rustler::Env, _info: rustler::Term) -> bool {
    bus::install_stop_signal_handler().is_ok()
}

include!(concat!(env!("OUT_DIR"), "/init.rs"));
