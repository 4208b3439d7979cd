//! Who runs where and does what in the chaos cluster: the hosts, the node each index
//! runs on, and each node's role. `tests/cluster/run` takes its node list from here
//! (`cluster_sim plan`), and the simulated cluster ([`super::scenario`]) builds the same.

/// The public hosts, one seed and relay on each (nodes 0, 1, 2).
pub const PUBLIC_HOSTS: [&str; 3] = ["pub1", "pub2", "pub3"];

/// Every host: the public ones, then those behind NAT routers.
pub const HOSTS: [&str; 9] = ["pub1", "pub2", "pub3", "a1", "a2", "b1", "s1", "c1", "d1"];

/// The NAT routers (a `nat_reboot` flushes one); natH is the home router inside natC.
pub const ROUTERS: [&str; 6] = ["natA", "natB", "natS", "natC", "natH", "natD"];

/// The host groups a partition cuts off the internet: a public host, or every host
/// behind a router facing the internet.
pub const GROUPS: [&str; 8] = [
    "pub1", "pub2", "pub3", "natA", "natB", "natS", "natC", "natD",
];

/// How often a caller calls (alternating `work.once` and `work.idem`).
pub const CALL_EVERY_MS: u64 = 2000;

/// How often a publisher publishes on `t.pI.x`.
pub const PUBLISH_EVERY_MS: u64 = 1000;

/// The number of seeds (nodes `0..SEEDS`, one per public host).
pub const SEEDS: usize = 3;

/// The fewest nodes a cluster has (one of each role on several hosts).
pub const MIN_NODES: usize = 12;

/// What one node does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// Its index.
    pub index: usize,
    /// The host it runs on (one of [`HOSTS`]).
    pub host: &'static str,
    /// A seed: public, a relay for everyone.
    pub relay: bool,
    /// Serves `work.idem` and `work.once`.
    pub provide: bool,
    /// Calls every [`CALL_EVERY_MS`].
    pub call: bool,
    /// Publishes on `t.pI.x` every [`PUBLISH_EVERY_MS`].
    pub publish: bool,
    /// The pattern it subscribes to, if any.
    pub subscribe: Option<String>,
}

impl Role {
    /// The topic this node publishes on.
    pub fn topic(&self) -> String {
        format!("t.p{}.x", self.index)
    }

    /// The node's workload as `cluster_node` flags.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if self.provide {
            flags.push("--provide".to_owned());
        }
        if self.publish {
            flags.extend([
                "--publish-every-ms".to_owned(),
                PUBLISH_EVERY_MS.to_string(),
            ]);
        }
        if self.call {
            flags.extend(["--call-every-ms".to_owned(), CALL_EVERY_MS.to_string()]);
        }
        if let Some(pattern) = &self.subscribe {
            flags.extend(["--subscribe".to_owned(), pattern.clone()]);
        }
        flags
    }
}

/// The roles of a cluster of `nodes` nodes, by index: seeds on the public hosts, the
/// rest round the hosts (`i % 9`); providers `i % 5 == 1`, publishers `i % 8 == 3`
/// (from 3), subscribers `i % 4 == 2` (from 3; `i % 4`, not `i % 3`, which would put
/// every subscriber on three hosts) to an exact topic, `t.*.x` or `t.#` in turn, and
/// callers every other non-seed: even ones and those with no other role.
pub fn roles(nodes: usize) -> Vec<Role> {
    let publishers: Vec<usize> = (SEEDS..nodes).filter(|i| i % 8 == 3).collect();
    (0..nodes)
        .map(|i| {
            let host = if i < SEEDS {
                PUBLIC_HOSTS[i]
            } else {
                HOSTS[i % HOSTS.len()]
            };
            let provide = i % 5 == 1;
            let publish = i >= SEEDS && i % 8 == 3;
            let subscribe =
                (i >= SEEDS && i % 4 == 2 && !publishers.is_empty()).then(|| match i / 4 % 3 {
                    0 => format!("t.p{}.x", publishers[i % publishers.len()]),
                    1 => "t.*.x".to_owned(),
                    _ => "t.#".to_owned(),
                });
            Role {
                index: i,
                host,
                relay: i < SEEDS,
                provide,
                call: i >= SEEDS && (i % 2 == 0 || (!provide && !publish)),
                publish,
                subscribe,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_nodes_have_every_role_on_several_hosts() {
        let roles = roles(30);
        assert_eq!(roles.len(), 30);
        assert!(roles[..3].iter().all(|r| r.relay && !r.call));
        assert_eq!((roles.iter().filter(|r| r.provide)).count(), 6);
        let publishers: Vec<usize> = (roles.iter().filter(|r| r.publish))
            .map(|r| r.index)
            .collect();
        assert_eq!(publishers, [3, 11, 19, 27]);
        let patterns: Vec<&str> = (roles.iter())
            .filter_map(|r| r.subscribe.as_deref())
            .collect();
        assert_eq!(patterns[..3], ["t.*.x", "t.#", "t.p19.x"]);
        assert!(
            roles
                .iter()
                .skip(3)
                .all(|r| r.call || r.provide || r.publish)
        );
        assert_eq!(roles[6].host, "s1");
        assert_eq!(
            roles[6].flags(),
            [
                "--provide",
                "--call-every-ms",
                "2000",
                "--subscribe",
                "t.*.x"
            ]
        );
    }
}
