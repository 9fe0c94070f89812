//! Cluster-mode core tests.
