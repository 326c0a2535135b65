//! Names the native module after the native version (NATIVE_VERSION, one
//! integer): `rustler::init!("bus_nif_N")`, so that two versions of the
//! library can be loaded side by side in one VM during a hot upgrade.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=NATIVE_VERSION");
    let version = fs::read_to_string("NATIVE_VERSION").expect("read NATIVE_VERSION");
    let version: u32 = version
        .trim()
        .parse()
        .expect("NATIVE_VERSION holds one integer");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::write(
        out.join("init.rs"),
        format!("rustler::init!(\"bus_nif_{version}\", load = load);\n"),
    )
    .expect("write init.rs");
    println!("cargo:rustc-env=BUS_NIF_VERSION={version}");
}
