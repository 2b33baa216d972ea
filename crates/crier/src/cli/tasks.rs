//! `crier tasks TASKID`: a push's report (`POST /v4/crier/task_report`), as JSON.

use clap::Args;
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
    for task_id in &args.task_ids {
        let body = json!({ "TaskId": task_id });
        let answer = super::call_ok(&args.target, &args.admin, "crier/task_report", &body).await?;
        println!("{}", serde_json::to_string_pretty(&answer["Report"])?);
    }
    Ok(())
}
