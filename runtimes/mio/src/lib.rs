//! mio driver (grows with the Node).
