//! Mesh topology (being written).
