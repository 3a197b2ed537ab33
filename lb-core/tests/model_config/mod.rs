//! The proptest settings lb-core's model tests share (`pool_model`, `least_model`,
//! `random_model`).

use proptest::test_runner::{Config, FileFailurePersistence};

/// `cases` cases; a failure is recorded beside its test file
/// (`tests/<name>.proptest-regressions`, committed) and run again first next time.
pub(crate) fn with_cases(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}
