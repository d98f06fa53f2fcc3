//! Scenarios: the TOML workload model, the built-in scenario library and the conformance checks.
