//! `crier push`: one signed `im_push` call; prints the TaskId. With `--at`, a scheduled task of
//! `v4/timpush` (`add_sched_task`) that pushes the same message then; prints its TaskID.

use anyhow::{anyhow, bail, Context};
use clap::Args;
use crier_client::{Admin, ClientError};
use serde_json::{json, Map, Value};

use super::Target;

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub target: Target,
    /// The admin identifier the call is signed for.
    #[arg(long, default_value = "administrator")]
    pub admin: String,
    /// Text of the message (one TIMTextElem).
    #[arg(long, conflicts_with = "msg_body")]
    pub text: Option<String>,
    /// The whole MsgBody as JSON, for other element types.
    #[arg(long, value_name = "JSON")]
    pub msg_body: Option<String>,
    /// Only users holding every one of these tags (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub tags_and: Vec<String>,
    /// Only users holding at least one of these tags (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub tags_or: Vec<String>,
    /// Only users whose attribute NAME equals VALUE, for every pair given (NAME=VALUE, repeat).
    #[arg(long, value_name = "NAME=VALUE", value_parser = attribute_pair)]
    pub attrs_and: Vec<(String, String)>,
    /// Only users matching at least one of these pairs (NAME=VALUE, repeat).
    #[arg(long, value_name = "NAME=VALUE", value_parser = attribute_pair)]
    pub attrs_or: Vec<(String, String)>,
    /// Seconds the push is kept for users who are offline now (0 = online users only; at most 604800).
    #[arg(long, default_value_t = 0)]
    pub lifetime: u64,
    /// Sender shown to recipients (an account or an admin; default: the calling admin).
    #[arg(long)]
    pub from: Option<String>,
    /// Offline notification title (OfflinePushInfo.Title).
    #[arg(long)]
    pub title: Option<String>,
    /// Offline notification text (OfflinePushInfo.Desc; default: the message's own text).
    #[arg(long)]
    pub desc: Option<String>,
    /// Retry key: the same MsgRandom and body within 1 s answer the first TaskId (default: random).
    #[arg(long)]
    pub msg_random: Option<u32>,
    /// Push later: at this UTC time, as a scheduled task (prints its TaskID). Its message is
    /// kept 7 days (--lifetime 604800) or for online users only (--lifetime 0).
    #[arg(long, value_name = "YYYY-MM-DD HH:MM:SS")]
    pub at: Option<String>,
}

/// The only lifetime a `v4/timpush/push` keeps a message for (`OnlineOnlyFlag` 0).
const TIMPUSH_LIFETIME_SECS: u64 = 604_800;

fn attribute_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

fn pairs(pairs: &[(String, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect(),
    )
}

impl PushArgs {
    fn body(&self) -> anyhow::Result<Value> {
        let msg_body: Value = match (&self.text, &self.msg_body) {
            (Some(text), None) => {
                json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}])
            }
            (None, Some(raw)) => serde_json::from_str(raw).context("--msg-body is not JSON")?,
            _ => bail!("give the message with --text or --msg-body"),
        };
        let mut body = json!({
            "MsgRandom": self.msg_random.unwrap_or_else(rand::random),
            "MsgLifeTime": self.lifetime,
            "MsgBody": msg_body,
        });
        let mut condition = Map::new();
        if !self.tags_and.is_empty() {
            condition.insert("TagsAnd".into(), json!(self.tags_and));
        }
        if !self.tags_or.is_empty() {
            condition.insert("TagsOr".into(), json!(self.tags_or));
        }
        if !self.attrs_and.is_empty() {
            condition.insert("AttrsAnd".into(), pairs(&self.attrs_and));
        }
        if !self.attrs_or.is_empty() {
            condition.insert("AttrsOr".into(), pairs(&self.attrs_or));
        }
        if !condition.is_empty() {
            body["Condition"] = Value::Object(condition);
        }
        if let Some(from) = &self.from {
            body["From_Account"] = json!(from);
        }
        if self.title.is_some() || self.desc.is_some() {
            let mut info = json!({"PushFlag": 0});
            if let Some(title) = &self.title {
                info["Title"] = json!(title);
            }
            if let Some(desc) = &self.desc {
                info["Desc"] = json!(desc);
            }
            body["OfflinePushInfo"] = info;
        }
        Ok(body)
    }

    /// The `Content` of a scheduled task pushing what [`PushArgs::body`] would, and its `Type`.
    fn sched_content(&self) -> anyhow::Result<(&'static str, Value)> {
        let mut content = self.body()?;
        let online_only = match self.lifetime {
            0 => 1,
            TIMPUSH_LIFETIME_SECS => 0,
            other => bail!(
                "--lifetime {other}: a scheduled push keeps its message {TIMPUSH_LIFETIME_SECS} s (7 days) or for online users only (0)"
            ),
        };
        let fields = content
            .as_object_mut()
            .context("the push body is an object")?;
        fields.remove("MsgLifeTime");
        fields.insert("OnlineOnlyFlag".into(), json!(online_only));
        let kind = if fields.contains_key("Condition") {
            "Tag"
        } else {
            "All"
        };
        Ok((kind, content))
    }
}

async fn schedule(args: &PushArgs, at: &str) -> anyhow::Result<()> {
    let (kind, content) = args.sched_content()?;
    let target = &args.target;
    let task_id = Admin::new(&target.url, target.sdkappid, &target.key, &args.admin)
        .add_sched_task(kind, at, &content)
        .await
        .map_err(|error| match error {
            ClientError::Refused { code, info } => {
                anyhow!("add_sched_task refused: ErrorCode {code} ({info})")
            }
            other => anyhow::Error::new(other).context(format!("cannot reach {}", target.url)),
        })?;
    println!("{task_id}");
    Ok(())
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    if let Some(at) = &args.at {
        return schedule(&args, at).await;
    }
    let body = args.body()?;
    let answer =
        super::call_ok(&args.target, &args.admin, "all_member_push/im_push", &body).await?;
    match answer.get("TaskId").and_then(Value::as_str) {
        Some(task_id) => {
            println!("{task_id}");
            Ok(())
        }
        None => bail!("im_push answered OK without a TaskId"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        push: PushArgs,
    }

    fn body(args: &[&str]) -> Value {
        let mut argv = vec!["push", "--sdkappid", "1", "--key", "k"];
        argv.extend_from_slice(args);
        Command::try_parse_from(argv).unwrap().push.body().unwrap()
    }

    #[test]
    fn flags_become_the_condition() {
        let by_tags = body(&[
            "--text",
            "hi",
            "--tags-or",
            "a,b",
            "--tags-and",
            "c",
            "--msg-random",
            "7",
        ]);
        assert_eq!(by_tags["MsgRandom"], 7);
        assert_eq!(by_tags["MsgBody"][0]["MsgContent"]["Text"], "hi");
        assert_eq!(
            by_tags["Condition"],
            json!({"TagsOr": ["a", "b"], "TagsAnd": ["c"]})
        );
        let by_attrs = body(&[
            "--text",
            "hi",
            "--attrs-and",
            "tier=gold",
            "--attrs-and",
            "city=sz",
        ]);
        assert_eq!(
            by_attrs["Condition"],
            json!({"AttrsAnd": {"tier": "gold", "city": "sz"}})
        );
    }

    #[test]
    fn a_scheduled_push_holds_the_same_message_as_a_timpush_body() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["push", "--sdkappid", "1", "--key", "k"];
            argv.extend_from_slice(args);
            let command = Command::try_parse_from(argv).unwrap();
            command.push.sched_content()
        };
        let (kind, content) =
            parse(&["--text", "hi", "--tags-or", "a", "--lifetime", "604800"]).unwrap();
        assert_eq!(kind, "Tag");
        assert_eq!(content["OnlineOnlyFlag"], 0);
        assert_eq!(content["Condition"], json!({"TagsOr": ["a"]}));
        assert!(content.get("MsgLifeTime").is_none());
        let (kind, content) = parse(&["--text", "hi"]).unwrap();
        assert_eq!((kind, &content["OnlineOnlyFlag"]), ("All", &json!(1)));
        assert!(parse(&["--text", "hi", "--lifetime", "60"]).is_err());
    }

    #[test]
    fn no_condition_means_everyone() {
        let to_all = body(&["--text", "hi", "--lifetime", "60"]);
        assert!(to_all.get("Condition").is_none());
        assert_eq!(to_all["MsgLifeTime"], 60);
    }
}
