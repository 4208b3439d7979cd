//! The crate's layering, checked on its sources (docs/ARCHITECTURE.md):
//!
//! - the wire layer (`src/wire/`) is the codec alone: it imports no subsystem, only the
//!   identity and record types its messages carry;
//! - no module but the Node (`src/node/`) and the simulator (`src/sim/`) imports
//!   `crate::node`: children never see the Node;
//! - RPC and pub/sub do not import each other, and the neutral modules they share
//!   (`directory`, `topic`, `access`) import neither;
//! - the simulator and its labs stay under `src/sim/`: no production module imports
//!   `crate::sim` or names a lab, and no module elsewhere is compiled for the simulator only.
//!
//! Rules name directories, not files, so modules added later fall under them. Comments are
//! skipped: a doc link is not a dependency.

use std::fs;
use std::path::Path;

/// What `src/wire/` may import from the crate: itself and the types its messages carry.
const WIRE_MAY_IMPORT: &[&str] = &["wire", "id", "record"];

/// The simulator's labs, by module name.
const LABS: &[&str] = &["punch_lab", "node_lab", "dht_net", "dht_scale"];

/// One source file: its path from the crate root (`src/...`, `/`-separated) and its code
/// with comments removed.
struct Source {
    path: String,
    code: String,
}

impl Source {
    /// Whether the file is `dir` itself (`dir.rs`) or lies under `dir/`.
    fn in_module(&self, dir: &str) -> bool {
        self.path == format!("{dir}.rs") || self.path.starts_with(&format!("{dir}/"))
    }

    /// Whether the code refers to the crate's top-level module `module`.
    fn imports(&self, module: &str) -> bool {
        crate_modules(&self.code).iter().any(|m| m == module)
    }
}

/// Every `.rs` file under `src/`.
fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("src/ is readable").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).expect("a source file is UTF-8");
                let relative = path.strip_prefix(root).expect("under the crate root");
                out.push(Source {
                    path: relative.to_string_lossy().replace('\\', "/"),
                    code: strip_comments(&text),
                });
            }
        }
    }
    assert!(out.len() > 50, "found only {} source files", out.len());
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The text with every `//` comment (doc comments included) cut off.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names after `crate::`, grouped imports included
/// (`use crate::{id::NodeId, node::Node}` names `id` and `node`).
fn crate_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = code[at + "crate::".len()..].trim_start();
        match rest.strip_prefix('{') {
            Some(group) => out.extend(group_heads(group)),
            None => out.push(ident(rest).to_owned()),
        }
    }
    out
}

/// The first path segment of each item of a `{...}` group (`group` starts after the `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && depth == 0 && !c.is_whitespace() => {
                heads.push(ident(&group[at..]).to_owned());
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

/// The identifier at the start of `text`.
fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Fails with every violation found, one per line.
fn assert_none(rule: &str, violations: Vec<String>) {
    assert!(
        violations.is_empty(),
        "{rule}:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn the_scanner_sees_plain_grouped_and_nested_imports_but_not_comments() {
    let code = strip_comments(
        "use crate::id::NodeId;\nuse crate::{\n    node::{Event, Node},\n    wire,\n};\n\
         let x = crate::pool::ConnId(1); // crate::rpc\npub(crate) fn f() {}\nmy_crate::dht;",
    );
    assert_eq!(crate_modules(&code), ["id", "node", "wire", "pool"]);
}

#[test]
fn the_wire_layer_imports_no_subsystem() {
    let violations = sources()
        .iter()
        .filter(|s| s.in_module("src/wire"))
        .flat_map(|s| {
            crate_modules(&s.code)
                .into_iter()
                .filter(|m| !WIRE_MAY_IMPORT.contains(&m.as_str()))
                .map(move |m| format!("{} imports crate::{m}", s.path))
        })
        .collect();
    assert_none(
        "src/wire/ may import only crate::{wire, id, record} (conversions belong to their owners)",
        violations,
    );
}

#[test]
fn only_the_node_and_the_simulator_import_the_node() {
    let violations = sources()
        .iter()
        .filter(|s| s.path != "src/lib.rs" && !s.in_module("src/node") && !s.in_module("src/sim"))
        .filter(|s| s.imports("node"))
        .map(|s| format!("{} imports crate::node", s.path))
        .collect();
    assert_none(
        "a child module never sees the Node (it asks for effects through its output enum)",
        violations,
    );
}

#[test]
fn rpc_and_pubsub_do_not_import_each_other_nor_does_what_they_share() {
    let rules: &[(&str, &[&str])] = &[
        ("src/rpc", &["pubsub"]),
        ("src/pubsub", &["rpc"]),
        ("src/directory", &["rpc", "pubsub"]),
        ("src/topic", &["rpc", "pubsub"]),
        ("src/access", &["rpc", "pubsub"]),
    ];
    let sources = sources();
    let mut violations = Vec::new();
    for (dir, banned) in rules {
        for s in sources.iter().filter(|s| s.in_module(dir)) {
            for module in banned.iter().filter(|m| s.imports(m)) {
                violations.push(format!("{} imports crate::{module}", s.path));
            }
        }
    }
    assert_none(
        "rpc and pubsub share crate::directory, crate::topic and crate::access, never each other",
        violations,
    );
}

#[test]
fn the_simulator_and_its_labs_stay_under_src_sim() {
    let mut violations = Vec::new();
    for s in sources()
        .iter()
        .filter(|s| s.path != "src/lib.rs" && !s.in_module("src/sim"))
    {
        if s.imports("sim") {
            violations.push(format!("{} imports crate::sim", s.path));
        }
        for lab in LABS.iter().filter(|lab| s.code.contains(*lab)) {
            violations.push(format!("{} names the lab {lab}", s.path));
        }
        let lines: Vec<&str> = s.code.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            let module = pair[1].split_whitespace().take(2).any(|word| word == "mod");
            if pair[0].contains("feature = \"sim\"") && module {
                violations.push(format!(
                    "{} has a simulator-only module: {}",
                    s.path, pair[1]
                ));
            }
        }
    }
    assert_none(
        "simulator-only modules (the labs) live under src/sim/",
        violations,
    );
}
