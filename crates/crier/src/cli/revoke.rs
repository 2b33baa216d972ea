//! `crier revoke TASKID`: recalls a push sent with `v4/timpush/push` (`v4/timpush/revoke`).

use clap::Args;
use serde_json::json;

use super::Target;

#[derive(Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub target: Target,
    /// The admin identifier the call is signed for.
    #[arg(long, default_value = "administrator")]
    pub admin: String,
    /// The TaskId `crier push --timpush` (or v4/timpush/push) printed.
    pub task_id: String,
    /// Title of the notification that replaces the one devices show (OfflinePushInfo.Title).
    #[arg(long)]
    pub title: Option<String>,
    /// Text of the replacing notification (OfflinePushInfo.Desc). A push that kept nothing
    /// (--online-only, or a notification) needs --title or --desc.
    #[arg(long)]
    pub desc: Option<String>,
}

impl RevokeArgs {
    fn body(&self) -> serde_json::Value {
        let mut body = json!({ "TaskId": self.task_id });
        if self.title.is_some() || self.desc.is_some() {
            let mut info = json!({});
            if let Some(title) = &self.title {
                info["Title"] = json!(title);
            }
            if let Some(desc) = &self.desc {
                info["Desc"] = json!(desc);
            }
            body["OfflinePushInfo"] = info;
        }
        body
    }
}

pub async fn run(args: RevokeArgs) -> anyhow::Result<()> {
    super::call_ok(&args.target, &args.admin, "timpush/revoke", &args.body()).await?;
    println!("revoked {}", args.task_id);
    Ok(())
}
