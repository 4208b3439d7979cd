//! Tokio driver (grows with the Node).
