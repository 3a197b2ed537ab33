//! Health checking for lb: active probes (TCP, HTTP, TLS, exec, UDP) with rise/fall
//! thresholds as keepalived and HAProxy define them, and passive outlier detection.
//!
//! This crate will own the sans-IO `HealthTracker`, the `Probe` trait and its probes,
//! and a tokio driver that publishes health events to `lb-core`. Nothing is implemented yet.
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]
