//! `crier tasks TASKID`: a push's report (`POST /v4/crier/task_report`), as JSON.

use anyhow::{bail, Context};
use clap::Args;
use crier_client::Admin;
use serde_json::json;

use super::Target;

#[derive(Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub target: Target,
    /// The admin identifier the call is signed for.
    #[arg(long, default_value = "administrator")]
    pub admin: String,
    /// TaskIds as im_push answered them.
    #[arg(required = true)]
    pub task_ids: Vec<String>,
}

pub async fn run(args: TasksArgs) -> anyhow::Result<()> {
    let admin = Admin::new(
        &args.target.url,
        args.target.sdkappid,
        &args.target.key,
        &args.admin,
    );
    for task_id in &args.task_ids {
        let answer = admin
            .call("crier/task_report", &json!({ "TaskId": task_id }))
            .await
            .with_context(|| format!("cannot reach {}", args.target.url))?;
        if answer.error_code != 0 {
            bail!(
                "task_report refused: ErrorCode {} ({})",
                answer.error_code,
                answer.error_info
            );
        }
        println!("{}", serde_json::to_string_pretty(&answer.rest["Report"])?);
    }
    Ok(())
}
