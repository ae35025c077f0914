//! `warden revoke`: stop an identity, a token (and every token issued from it) or a session, through the admin API.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use hyper::Method;

use crate::admin_client::AdminClient;

#[derive(Args)]
pub(crate) struct RevokeArgs {
    #[arg(long, short, env = "WARDEN_CONFIG", default_value = "warden.toml")]
    config: PathBuf,
    /// The admin API, e.g. http://127.0.0.1:18081 (default: the config's [listen] admin).
    #[arg(long)]
    admin_url: Option<String>,
    /// Revoke every credential of this identity, now and later.
    #[arg(long, conflicts_with_all = ["token", "session"])]
    identity: Option<String>,
    /// Revoke this warden token (tok_…) and every token issued from it.
    #[arg(long, conflicts_with_all = ["identity", "session"])]
    token: Option<String>,
    /// End this session.
    #[arg(long, conflicts_with_all = ["identity", "token"])]
    session: Option<String>,
    /// Why, for the record and the ended sessions' clients.
    #[arg(long)]
    reason: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: RevokeArgs) -> Result<()> {
    let mut body = match (&args.identity, &args.token, &args.session) {
        (Some(identity), None, None) => serde_json::json!({ "identity": identity }),
        (None, Some(token), None) => serde_json::json!({ "token": token }),
        (None, None, Some(session)) => serde_json::json!({ "session": session }),
        _ => bail!("name what to revoke: --identity NAME, --token ID or --session ID"),
    };
    if let Some(reason) = &args.reason {
        body["reason"] = serde_json::json!(reason);
    }
    let client = AdminClient::new(args.admin_url.as_deref(), &args.config)?;
    let answer = client.call(Method::POST, "/v1/revocations", Some(&body)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "revoked {} {}; {} live session(s) ended",
            answer["kind"].as_str().unwrap_or_default(),
            answer["subject"].as_str().unwrap_or_default(),
            answer["sessions_ended"]
        );
    }
    Ok(())
}
