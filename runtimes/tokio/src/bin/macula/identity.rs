//! Identity files: an Ed25519 key in PKCS#8 PEM, the node id derived from
//! it. A missing file is created (readable by its owner only); an existing
//! one that does not hold such a key is an error naming the file.

use std::io::{ErrorKind, Write};
use std::path::Path;

use macula::id::Identity;
use macula::tls;

use crate::failure::Failure;

/// The identity in `path`, creating the file with a new identity if it
/// does not exist (and saying so on stderr).
pub fn load_or_create(path: &Path) -> Result<Identity, Failure> {
    match std::fs::metadata(path) {
        Ok(_) => {
            tls::read_identity(path).map_err(|e| Failure::settings(format!("identity file: {e}")))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let identity = create(path)?;
            eprintln!(
                "created a new identity in {} (node id {})",
                path.display(),
                identity.node_id()
            );
            Ok(identity)
        }
        Err(e) => Err(Failure::settings(format!(
            "cannot read identity file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes a new identity to `path`, which must not exist yet.
pub fn create(path: &Path) -> Result<Identity, Failure> {
    let identity = generate()?;
    let fail = |e: std::io::Error| {
        Failure::settings(format!(
            "cannot create identity file {}: {e}",
            path.display()
        ))
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(tls::identity_to_pem(&identity).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    Ok(identity)
}

/// A fresh identity from the OS random source.
pub fn generate() -> Result<Identity, Failure> {
    macula_tokio::random::identity()
        .map_err(|e| Failure::other(format!("OS random source failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_identity_loads_back_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("macula-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.pem");
        let created = load_or_create(&path).unwrap();
        assert_eq!(load_or_create(&path).unwrap().node_id(), created.node_id());
        assert!(
            create(&path).unwrap_err().message.contains("node.pem"),
            "never overwrites"
        );

        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let error = load_or_create(&garbage).unwrap_err();
        assert!(error.message.contains("garbage.pem"), "{}", error.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
