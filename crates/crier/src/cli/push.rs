//! `crier push`: one signed `im_push` call, or `v4/timpush/push` with `--timpush` (or an
//! option only that API has); prints the TaskId. With `--at`, a scheduled task
//! (`v4/timpush/add_sched_task`) that makes that `v4/timpush/push` at the time given; prints
//! the task's TaskID.

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
    /// Leave out users holding any of these tags (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub tags_not: Vec<String>,
    /// Only users whose attribute NAME equals VALUE, for every pair given (NAME=VALUE, repeat).
    #[arg(long, value_name = "NAME=VALUE", value_parser = attribute_pair)]
    pub attrs_and: Vec<(String, String)>,
    /// Only users matching at least one of these pairs (NAME=VALUE, repeat).
    #[arg(long, value_name = "NAME=VALUE", value_parser = attribute_pair)]
    pub attrs_or: Vec<(String, String)>,
    /// Seconds the push is kept for users who are offline now (0 = online users only; at most 604800).
    #[arg(long, default_value_t = 0, conflicts_with_all = ["timpush", "at"])]
    pub lifetime: u64,
    /// Send through v4/timpush/push, so that `crier revoke` can recall it: the message is kept
    /// 7 days for offline users (unless --online-only); with no message (neither --text nor
    /// --msg-body) it is a notification made of --title and --desc.
    #[arg(long)]
    pub timpush: bool,
    /// Connected users only, nothing kept (v4/timpush/push's OnlineOnlyFlag 1; implies --timpush).
    #[arg(long)]
    pub online_only: bool,
    /// The caller's label of the push, echoed in delivery callbacks (implies --timpush).
    #[arg(long)]
    pub data_id: Option<String>,
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
    /// Push later, at this UTC time, as a scheduled task (implies --timpush); prints the
    /// task's TaskID.
    #[arg(long, value_name = "YYYY-MM-DD HH:MM:SS")]
    pub at: Option<String>,
}

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
    /// Whether the push goes through `v4/timpush/push` rather than `im_push`.
    pub fn is_timpush(&self) -> bool {
        self.timpush || self.online_only || self.data_id.is_some() || self.at.is_some()
    }

    /// The REST path and body of the push.
    pub fn request(&self) -> anyhow::Result<(&'static str, Value)> {
        let body = self.body()?;
        Ok(if self.is_timpush() {
            ("timpush/push", body)
        } else {
            ("all_member_push/im_push", body)
        })
    }

    fn msg_body(&self) -> anyhow::Result<Option<Value>> {
        Ok(match (&self.text, &self.msg_body) {
            (Some(text), None) => Some(json!([
                {"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}
            ])),
            (None, Some(raw)) => Some(serde_json::from_str(raw).context("--msg-body is not JSON")?),
            _ => None,
        })
    }

    fn body(&self) -> anyhow::Result<Value> {
        let mut body = json!({"MsgRandom": self.msg_random.unwrap_or_else(rand::random)});
        match (self.msg_body()?, self.is_timpush()) {
            (Some(msg_body), false) => {
                body["MsgLifeTime"] = json!(self.lifetime);
                body["MsgBody"] = msg_body;
            }
            (Some(msg_body), true) => {
                body["OnlineOnlyFlag"] = json!(u8::from(self.online_only));
                body["MsgBody"] = msg_body;
            }
            (None, true) if self.title.is_some() || self.desc.is_some() => {}
            (None, true) => bail!(
                "give the message with --text or --msg-body, or a notification with --title/--desc"
            ),
            (None, false) => bail!("give the message with --text or --msg-body"),
        }
        if let Some(data_id) = &self.data_id {
            body["DataId"] = json!(data_id);
        }
        let mut condition = Map::new();
        if !self.tags_and.is_empty() {
            condition.insert("TagsAnd".into(), json!(self.tags_and));
        }
        if !self.tags_or.is_empty() {
            condition.insert("TagsOr".into(), json!(self.tags_or));
        }
        if !self.tags_not.is_empty() {
            condition.insert("TagsNot".into(), json!(self.tags_not));
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

    /// The `Type` and `Content` of a scheduled task that makes the push of [`PushArgs::body`].
    fn sched_content(&self) -> anyhow::Result<(&'static str, Value)> {
        let content = self.body()?;
        let kind = if content.get("Condition").is_some() {
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
    let (path, body) = args.request()?;
    let answer = super::call_ok(&args.target, &args.admin, path, &body).await?;
    match answer.get("TaskId").and_then(Value::as_str) {
        Some(task_id) => {
            println!("{task_id}");
            Ok(())
        }
        None => bail!("{path} answered OK without a TaskId"),
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
    fn a_scheduled_push_is_the_timpush_push_it_makes() {
        let parse = |args: &[&str]| {
            let mut argv = vec![
                "push",
                "--sdkappid",
                "1",
                "--key",
                "k",
                "--at",
                "2030-01-01 00:00:00",
            ];
            argv.extend_from_slice(args);
            Command::try_parse_from(argv).map(|command| command.push)
        };
        let tagged = parse(&["--text", "hi", "--tags-or", "a"]).unwrap();
        let (kind, content) = tagged.sched_content().unwrap();
        assert_eq!(kind, "Tag");
        assert_eq!(content["OnlineOnlyFlag"], 0, "kept 7 days");
        assert_eq!(content["Condition"], json!({"TagsOr": ["a"]}));
        assert!(content.get("MsgLifeTime").is_none());
        let to_all = parse(&["--text", "hi", "--online-only"]).unwrap();
        let (kind, content) = to_all.sched_content().unwrap();
        assert_eq!((kind, &content["OnlineOnlyFlag"]), ("All", &json!(1)));
        assert!(parse(&["--text", "hi", "--lifetime", "60"]).is_err());
    }

    #[test]
    fn timpush_options_choose_v4_timpush_push() {
        let mut argv = vec!["push", "--sdkappid", "1", "--key", "k"];
        argv.extend_from_slice(&["--text", "hi", "--online-only", "--tags-not", "x,y"]);
        let args = Command::try_parse_from(argv).unwrap().push;
        let (path, online_only) = args.request().unwrap();
        assert_eq!(path, "timpush/push");
        assert_eq!(online_only["OnlineOnlyFlag"], 1);
        assert!(online_only.get("MsgLifeTime").is_none());
        assert_eq!(online_only["Condition"], json!({"TagsNot": ["x", "y"]}));
        let notification = body(&["--timpush", "--title", "Sale", "--data-id", "c1"]);
        assert!(notification.get("MsgBody").is_none());
        assert_eq!(notification["OfflinePushInfo"]["Title"], "Sale");
        assert_eq!(notification["DataId"], "c1");
        let kept = body(&["--text", "hi", "--timpush"]);
        assert_eq!(kept["OnlineOnlyFlag"], 0);
        let classic =
            Command::try_parse_from(["push", "--sdkappid", "1", "--key", "k", "--text", "hi"])
                .unwrap()
                .push;
        assert_eq!(classic.request().unwrap().0, "all_member_push/im_push");
        assert!(Command::try_parse_from([
            "push",
            "--sdkappid",
            "1",
            "--key",
            "k",
            "--text",
            "hi",
            "--timpush",
            "--lifetime",
            "5"
        ])
        .is_err());
    }

    #[test]
    fn no_condition_means_everyone() {
        let to_all = body(&["--text", "hi", "--lifetime", "60"]);
        assert!(to_all.get("Condition").is_none());
        assert_eq!(to_all["MsgLifeTime"], 60);
    }
}
