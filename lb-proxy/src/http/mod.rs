//! HTTP/1.1 mode: per-request balancing on hyper. Being built (issue: HTTP mode).
