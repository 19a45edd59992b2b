//! Benchmarks for sus-cluster: criterion micro benchmarks and the peer-engine harness (issue #7).
