//! sus-cluster client library.
