//! `lb-node`: for now only `lb-node --check CONFIG`. See [`lb_bins::check`].
fn main() {}
