//! `lbctl`: placeholder until the admin client lands.
fn main() {}
