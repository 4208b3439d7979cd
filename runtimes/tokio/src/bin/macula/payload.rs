//! The payload of `macula call` and `macula publish`: the argument's
//! bytes, a file's, or stdin's (`-`).

use std::io::Read;

use bytes::Bytes;

use crate::args::PayloadArgs;
use crate::failure::Failure;

/// Reads the payload `args` point at.
pub fn read(args: &PayloadArgs) -> Result<Bytes, Failure> {
    if let Some(path) = &args.file {
        return std::fs::read(path).map(Bytes::from).map_err(|e| {
            Failure::settings(format!("cannot read payload file {}: {e}", path.display()))
        });
    }
    match args.payload.as_deref() {
        None => Ok(Bytes::new()),
        Some("-") => {
            let mut buffer = Vec::new();
            std::io::stdin().read_to_end(&mut buffer).map_err(|e| {
                Failure::settings(format!("cannot read the payload from stdin: {e}"))
            })?;
            Ok(Bytes::from(buffer))
        }
        Some(text) => Ok(Bytes::copy_from_slice(text.as_bytes())),
    }
}
