//! The bindings are generated from `wit/*.wit` by a macro cargo cannot see into: rebuild them when
//! the contract changes.
fn main() {
    println!("cargo:rerun-if-changed=wit");
}
