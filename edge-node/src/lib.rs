//! edge-node
