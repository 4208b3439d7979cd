//! Unit tests of the reachability machine, driven without a Node.
