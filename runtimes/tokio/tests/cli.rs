//! The `macula` binary driven as a subprocess: the demo, nodes with calls,
//! publications and subscriptions against them, the layering of flags,
//! environment and config file, and the errors for bad flags and files.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// Every step of these tests finishes well within this on loopback.
const LIMIT: Duration = Duration::from_secs(30);

/// The binary, with no `MACULA_*` variable inherited from the environment.
fn macula() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_macula"));
    for (name, _) in std::env::vars() {
        if name.starts_with("MACULA_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `macula args...` to its end.
fn run(args: &[&str]) -> Output {
    macula().args(args).output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `macula` process still running, its output read line by line.
struct Running {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

/// The lines of `stream`, as they come.
fn lines(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

impl Running {
    fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// The first line of `stream` containing `needle`, each line coming
    /// within [`LIMIT`].
    fn wait(stream: &Receiver<String>, needle: &str) -> String {
        loop {
            match stream.recv_timeout(LIMIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?}: {e}"),
            }
        }
    }

    fn stdout_line(&self, needle: &str) -> String {
        Self::wait(&self.stdout, needle)
    }

    fn stderr_line(&self, needle: &str) -> String {
        Self::wait(&self.stderr, needle)
    }

    /// The seed line a `macula node` prints.
    fn seed(&self) -> String {
        let line = self.stdout_line("seed ");
        line.split_whitespace().nth(1).unwrap().to_owned()
    }

    /// `signal` (`INT` as Ctrl-C sends it, `TERM`), then the exit status.
    fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let flag = format!("-{signal}");
        let sent = Command::new("kill").args([&flag, &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Already ended, or ended now: either way it is not left behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `macula node` on 127.0.0.1 with `args`.
fn node(args: &[&str]) -> Running {
    Running::start(
        macula()
            .args(["node", "--listen", "127.0.0.1:0"])
            .args(args),
    )
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("macula-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_demo_answers_every_call_and_delivers_every_publication() {
    let output = run(&["demo", "--calls", "50"]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("all calls answered and all publications delivered as expected"));
    assert!(stdout.contains("over 50 calls"), "{stdout}");
    for topic in [
        "sensors.kitchen.temp",
        "sensors.hall.temp",
        "alerts.kitchen.smoke",
    ] {
        assert!(
            stdout.contains(&format!("  {topic} ")),
            "{topic} reported: {stdout}"
        );
    }
    assert!(
        !stdout.contains("MISSING") && !stdout.contains("DUPLICATED"),
        "{stdout}"
    );
    assert!(stderr.contains("4 joined"), "{stderr}");
}

/// Runs `macula call` until it finds a provider. A node announces its
/// procedure as it starts serving it: a caller that looks it up before the
/// record is stored finds no provider (exit code 5), and tries again as a
/// new process.
fn call_until_served(args: &[&str]) -> Output {
    let mut call = run(args);
    for _ in 0..50 {
        if call.status.code() != Some(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        call = run(args);
    }
    call
}

#[test]
fn calls_publications_and_subscriptions_reach_running_nodes() {
    // The seed serves too, once another node has joined it.
    let seed_node = node(&["--echo", "cli.first"]);
    let seed = seed_node.seed();
    let provider = node(&["--seed", &seed, "--echo", "cli.echo"]);
    provider.stderr_line("serving cli.echo");
    seed_node.stderr_line("serving cli.first");
    let first = call_until_served(&["call", "cli.first", "1st", "--seed", &seed]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(text(&first.stdout), "1st");

    let call = call_until_served(&["call", "cli.echo", "hello mesh", "--seed", &seed]);
    assert!(call.status.success(), "{}", text(&call.stderr));
    assert_eq!(text(&call.stdout), "hello mesh");
    assert!(text(&call.stderr).contains("cli.echo answered 10 bytes in"));
    provider.stderr_line("echo: cli.echo called by");

    let nobody = run(&["call", "cli.nobody", "--seed", &seed]);
    assert_eq!(nobody.status.code(), Some(5), "{}", text(&nobody.stderr));
    assert!(text(&nobody.stderr).contains("no provider of \"cli.nobody\""));

    let subscriber = Running::start(macula().args([
        "subscribe",
        "sensors.*.temp",
        "--count",
        "1",
        "--seed",
        &seed,
    ]));
    subscriber.stderr_line("subscribed to sensors.*.temp");
    let publish = run(&["publish", "sensors.kitchen.temp", "21.5", "--seed", &seed]);
    assert!(publish.status.success(), "{}", text(&publish.stderr));
    assert!(
        text(&publish.stderr).contains("delivered to 1 of 1 subscribers"),
        "{}",
        text(&publish.stderr)
    );
    assert_eq!(
        subscriber.stdout_line("sensors"),
        "sensors.kitchen.temp\t21.5"
    );
    let mut subscriber = subscriber;
    assert!(
        subscriber.child.wait().unwrap().success(),
        "exits after --count 1"
    );
    // The subscriber is gone but its record is still in the DHT: the
    // message reaches nobody, and publish says so and fails.
    let lost = run(&[
        "publish",
        "sensors.kitchen.temp",
        "22.0",
        "--seed",
        &seed,
        "--timeout",
        "3",
    ]);
    assert_eq!(lost.status.code(), Some(10), "{}", text(&lost.stderr));
    assert!(
        text(&lost.stderr).contains("delivered to 0 of 1 subscribers"),
        "{}",
        text(&lost.stderr)
    );
    // The subscriber said it was shutting down: the mesh no longer hands it
    // out, so joining does not wait for it to time out (about 5 s).
    let after = run(&[
        "call",
        "cli.echo",
        "again",
        "--seed",
        &seed,
        "--timeout",
        "3",
    ]);
    assert!(after.status.success(), "{}", text(&after.stderr));

    assert!(
        provider.stop("INT").success(),
        "Ctrl-C stops a node cleanly"
    );
    assert!(seed_node.stop("TERM").success(), "so does SIGTERM");
}

#[test]
fn flags_win_over_environment_over_config_file() {
    let dir = scratch("layers");
    let config = dir.join("macula.toml");
    std::fs::write(
        &config,
        "realm = \"org.example.file\"\nidentity = \"node.pem\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let from_file = node(&["--config", config]);
    from_file.stderr_line("created a new identity in");
    // `macula node` prints its node id, then its realm.
    let id = from_file.stdout_line("node id");
    assert!(from_file.stdout_line("realm").ends_with("org.example.file"));
    drop(from_file);
    assert!(
        dir.join("node.pem").exists(),
        "identity path relative to the config file"
    );

    let mut command = macula();
    command
        .args(["node", "--listen", "127.0.0.1:0", "--config", config])
        .env("MACULA_REALM", "org.example.env");
    let from_env = Running::start(&mut command);
    assert_eq!(
        from_env.stdout_line("node id"),
        id,
        "the identity file is reused"
    );
    assert!(from_env.stdout_line("realm").ends_with("org.example.env"));
    drop(from_env);

    let mut command = macula();
    command
        .args(["node", "--listen", "127.0.0.1:0", "--config", config])
        .args(["--realm", "org.example.flag"])
        .env("MACULA_REALM", "org.example.env");
    let from_flag = Running::start(&mut command);
    assert!(from_flag.stdout_line("realm").ends_with("org.example.flag"));
}

#[test]
fn bad_flags_and_files_fail_with_a_clear_message_and_exit_code() {
    let dir = scratch("errors");
    let expect = |args: &[&str], code: i32, needle: &str| {
        let output = run(args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    expect(&["node", "--bogus"], 2, "unexpected argument '--bogus'");
    expect(
        &["call", "x", "--seed", "127.0.0.1:4433"],
        2,
        "is not NODEID@HOST:PORT",
    );
    expect(&["node", "--realm", "NoDots"], 2, "invalid value 'NoDots'");

    let config = dir.join("bad.toml");
    std::fs::write(&config, "realm = \"a.b\"\nlisten = 4433\n").unwrap();
    let config = config.to_str().unwrap();
    expect(&["node", "--config", config], 3, "bad.toml");
    expect(&["node", "--config", config], 3, "listen");
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "seeds = []\nlisten_address = \"1.2.3.4:5\"\n").unwrap();
    expect(
        &["node", "--config", unknown.to_str().unwrap()],
        3,
        "unknown field `listen_address`",
    );
    let missing = dir.join("missing.toml");
    expect(
        &["node", "--config", missing.to_str().unwrap()],
        3,
        "cannot read config file",
    );

    let identity = dir.join("garbage.pem");
    std::fs::write(&identity, "not a key").unwrap();
    let identity = identity.to_str().unwrap();
    expect(
        &["node", "--listen", "127.0.0.1:0", "--identity", identity],
        3,
        "garbage.pem",
    );

    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    expect(&["node", "--listen", &taken], 4, "the address is in use");

    let nobody = UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed = format!("{}@{}", "ab".repeat(32), nobody.local_addr().unwrap());
    let args = ["call", "x", "--seed", &seed, "--timeout", "1"];
    expect(&args, 4, "no seed answered within 1.0 s");
    expect(&["call", "x"], 3, "no seed to join through");
}

/// `args` as the `&str`s [`node`] and [`run`] take.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A caller with a self-signed identity certificate cannot join through
/// `seed` (exit code 4: no seed answered).
fn outsider_is_refused(seed: &str) {
    let outsider = run(&["call", "x", "--seed", seed, "--timeout", "2"]);
    let stderr = text(&outsider.stderr);
    assert_eq!(outsider.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("no seed answered"), "{stderr}");
}

/// `macula keygen path`.
fn keygen(path: &std::path::Path) -> rcgen::KeyPair {
    let made = run(&["keygen", path.to_str().unwrap()]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    rcgen::KeyPair::from_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn ca_mode_admits_certificates_of_the_ca_and_refuses_others() {
    let dir = scratch("ca");
    let ca_key = keygen(&dir.join("ca-key.pem"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    for name in ["a", "b"] {
        let key = keygen(&dir.join(format!("{name}.pem")));
        let params = rcgen::CertificateParams::new(vec![macula::tls::SERVER_NAME.into()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}-cert.pem")), cert.pem()).unwrap();
    }
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let ca_args = |name: &str| {
        let (key, cert) = (
            file(&format!("{name}.pem")),
            file(&format!("{name}-cert.pem")),
        );
        let tls = ["--tls", "ca", "--ca-file", &file("ca.pem")].map(String::from);
        let own = ["--identity".into(), key, "--cert-file".into(), cert];
        tls.into_iter().chain(own).collect::<Vec<String>>()
    };

    let a = node(&strs(&ca_args("a")));
    let seed = a.seed();
    let mut b_args = ca_args("b");
    b_args.extend(["--seed".into(), seed.clone()]);
    let b = node(&strs(&b_args));
    b.stderr_line("joined the mesh: 1 peers");

    outsider_is_refused(&seed);

    let mut mismatched = ca_args("a");
    mismatched[5] = file("b.pem");
    let mut args = vec!["node", "--listen", "127.0.0.1:0"];
    args.extend(strs(&mismatched));
    let output = run(&args);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("does not hold the private key"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn pinned_mode_admits_only_the_pinned_node_ids() {
    let dir = scratch("pinned");
    let identity = |name: &str| {
        let path = dir.join(format!("{name}.pem"));
        let made = run(&["keygen", path.to_str().unwrap()]);
        assert!(made.status.success(), "{}", text(&made.stderr));
        (
            path.to_str().unwrap().to_owned(),
            text(&made.stdout).trim().to_owned(),
        )
    };
    let ((a_key, a_id), (b_key, b_id)) = (identity("a"), identity("b"));
    let a = node(&["--identity", &a_key, "--tls", "pinned", "--pin", &b_id]);
    let seed = a.seed();
    assert!(seed.starts_with(&a_id), "keygen printed the node id");
    let b = node(&[
        "--identity",
        &b_key,
        "--tls",
        "pinned",
        "--pin",
        &a_id,
        "--seed",
        &seed,
    ]);
    b.stderr_line("joined the mesh: 1 peers");

    outsider_is_refused(&seed);
    let no_pin = run(&["node", "--listen", "127.0.0.1:0", "--tls", "pinned"]);
    assert_eq!(no_pin.status.code(), Some(3));
    assert!(
        text(&no_pin.stderr).contains("at least one pin"),
        "{}",
        text(&no_pin.stderr)
    );
}
