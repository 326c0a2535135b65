//! Gives the shared library the soname of the original libbus, so that
//! programs linked against either load whichever is installed.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libbus.so.3");
    println!("cargo:rerun-if-changed=build.rs");
}
