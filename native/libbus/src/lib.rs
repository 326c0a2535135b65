//! # libbus
//!
//! The C interface of `bus`: a drop-in replacement for the original C
//! `libbus`, with the same header (`include/bus.h`), types, constants and
//! return conventions, built on the Rust core crate.
//!
//! - [`ffi`] holds every exported symbol and every `unsafe` block: it turns
//!   C pointers into Rust values, catches panics, sets `errno`.
//! - [`api`] does the work in safe Rust, returning `Result<_, errno>`.
//! - [`registry`] keeps, per open `bus_t`, the core's [`bus_core::Bus`]
//!   and its poller, found by the attach address stored in
//!   `bus_t.message`.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod api;
#[allow(unsafe_code)]
mod ffi;
mod registry;
