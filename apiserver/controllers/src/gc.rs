//! TODO
use tokio_util::sync::CancellationToken;
pub async fn run(_client: api::Client, _t: CancellationToken) {}
