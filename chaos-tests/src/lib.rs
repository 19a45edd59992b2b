//! Fault-injection harness for sus-cluster; arrives with issue #6 once the cluster is replicated.
