//! Cluster secrets.
