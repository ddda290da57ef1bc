//! The embedded engine (in progress).
