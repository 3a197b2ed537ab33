//! Test and lab harness for lb: network namespaces joined by a bridge, processes started
//! inside them, and guards that remove everything even when a test fails. Not published.
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]
