//! The node's spinning budget: what every writer and listener this library
//! opens spins for before it blocks (see the core's `Bus::set_spin`). The
//! Erlang side (bus_config: application env `spin_us`, else `BUS_SPIN_US`,
//! else none) sets it when it loads this library and whenever the
//! configuration is taken again; until then the core's default applies.
//! The writers this library keeps open take a new budget at once; a
//! listener keeps the one it started with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustler::{Error, NifResult};

/// The budget in microseconds; `u64::MAX` until the Erlang side sets one.
static SPIN_US: AtomicU64 = AtomicU64::new(u64::MAX);

/// The node's budget, if the Erlang side has set one.
pub fn budget() -> Option<Duration> {
    match SPIN_US.load(Ordering::Relaxed) {
        u64::MAX => None,
        us => Some(Duration::from_micros(us)),
    }
}

/// `set_spin(Micros) -> ok`: the budget of the buses opened from now on,
/// and of the writers this library keeps open; `badarg` above the core's
/// maximum (10000).
#[rustler::nif]
fn set_spin(micros: u64) -> NifResult<rustler::Atom> {
    let spin = Duration::from_micros(micros);
    if spin > bus::MAX_SPIN {
        return Err(Error::BadArg);
    }
    SPIN_US.store(micros, Ordering::Relaxed);
    crate::writer::respin_cached(spin);
    Ok(rustler::types::atom::ok())
}

/// `spin() -> Micros | default`: the budget set_spin/1 set, or `default`
/// (the core's: `BUS_SPIN_US`, else none) before it is called.
#[rustler::nif]
fn spin() -> SpinTerm {
    SpinTerm(budget())
}

/// A budget as the Erlang side sees it.
struct SpinTerm(Option<Duration>);

rustler::atoms! { default }

impl rustler::Encoder for SpinTerm {
    fn encode<'a>(&self, env: rustler::Env<'a>) -> rustler::Term<'a> {
        match self.0 {
            Some(d) => (d.as_micros() as u64).encode(env),
            None => default().encode(env),
        }
    }
}
