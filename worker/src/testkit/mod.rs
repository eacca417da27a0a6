//! The demo and what tests, the benchmark and the demo share: a verifying HTTPS receiver with its
//! own test CA, and a throwaway PostgreSQL cluster. Behind the `testkit` feature, so that a
//! production build (`--no-default-features`) carries neither `rcgen` nor `tempfile`.

pub mod demo;
pub mod pgcluster;
pub mod proxy;
pub mod receiver;
