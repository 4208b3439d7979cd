//! placeholder
use crate::args::{CallArgs, PublishArgs, SubscribeArgs};
use crate::failure::Failure;
pub async fn call(_: CallArgs) -> Result<(), Failure> { Err(Failure::other("x")) }
pub async fn publish(_: PublishArgs) -> Result<(), Failure> { Err(Failure::other("x")) }
pub async fn subscribe(_: SubscribeArgs) -> Result<(), Failure> { Err(Failure::other("x")) }
