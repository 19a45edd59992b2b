//! Fault-injection harness for sus-cluster: clusters of real node processes ([`cluster`]) that
//! tests kill, pause, wipe and restart. The randomised fault schedules arrive with issue #6.

pub mod cluster;
