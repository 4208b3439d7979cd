//! The procedures `macula node --echo` serves, to try the mesh with: each
//! answers a call with its payload.

use macula_tokio::{MaculaNode, ProcedureOptions, Registration, Request};

use crate::failure::Failure;

/// Serves each of `procedures` on `node` as an echo; the procedures stay
/// served while the returned registrations live.
pub async fn serve_echo(
    node: &MaculaNode,
    procedures: &[String],
) -> Result<Vec<Registration>, Failure> {
    let options = ProcedureOptions {
        // Answering twice is harmless: callers may fail over freely.
        idempotent: true,
        ..ProcedureOptions::default()
    };
    let mut served = Vec::with_capacity(procedures.len());
    for procedure in procedures {
        let registration = node
            .register(procedure, options, |request: Request| async move {
                eprintln!(
                    "echo: {} called by {} ({} bytes)",
                    request.procedure,
                    request.caller,
                    request.payload.len()
                );
                Ok(request.payload)
            })
            .await
            .map_err(|e| Failure::settings(format!("cannot serve --echo {procedure:?}: {e}")))?;
        eprintln!("serving {procedure} (echo)");
        served.push(registration);
    }
    Ok(served)
}
