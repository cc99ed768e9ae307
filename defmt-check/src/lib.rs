//! Holds no code: the check is `tests/frames.rs`, which needs `defmt-decoder`
//! and so lives outside the crate's own test suite.
