//! The Erlang binding of the bus core crate: glue only. Each NIF decodes its
//! arguments, calls the core, and encodes the result; failures come back as
//! `{error, Reason}` (see `term.rs`), `badarg` only for terms of the wrong
//! type.
//!
//! The native module is `bus_nif`; the Erlang module of that name is the
//! only caller, so a later `bus_nif_v2` can be loaded side by side.

mod admin;
mod listener;
mod term;
mod writer;

rustler::init!("bus_nif");
