//! Analytics: the pure computations behind the analytics routes.
pub mod compute;
