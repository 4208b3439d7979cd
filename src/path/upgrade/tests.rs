//! Unit tests of the upgrade machine, driven without a Node.
