//! placeholder
use macula_tokio::MaculaNode;
use crate::failure::Failure;
pub async fn serve_echo(_: &MaculaNode, _: &[String]) -> Result<(), Failure> { Ok(()) }
