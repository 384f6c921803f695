//! Black-box tests of the `roster` binary live in `tests/tests/`.
