//! Real dependencies for wharf's tests and its fault-injection harness, started on demand and
//! cleaned up however the test process ends: no mocks.
//!
//! - [`postgres`]: a throwaway PostgreSQL server (`initdb` + `pg_ctl` on a temporary directory
//!   and a free port), one per process, a fresh database per test.
//! - [`browser`]: a headless Chromium driven through ChromeDriver (WebDriver).

pub mod browser;
pub mod postgres;
