//! `kvstore alarm list|disarm` and `kvstore defrag`, as etcdctl prints them.

use etcd_client::{AlarmAction, AlarmOptions, AlarmType};

use super::{Ctx, cluster};

#[derive(clap::Subcommand, Debug)]
pub enum AlarmCommand {
    /// Lists all alarms.
    List,
    /// Disarms all alarms.
    Disarm,
}

#[derive(clap::Args, Debug)]
pub struct DefragArgs {
    /// Defragment every member of the cluster (from the member list).
    #[arg(long)]
    pub cluster: bool,
}

fn alarm_name(alarm: i32) -> &'static str {
    match alarm {
        1 => "NOSPACE",
        2 => "CORRUPT",
        _ => "NONE",
    }
}

pub(crate) async fn alarm(ctx: &Ctx, cmd: AlarmCommand) -> anyhow::Result<()> {
    let mut client = ctx.client().await?;
    let listed = ctx
        .call(client.alarm(AlarmAction::Get, AlarmType::None, None))
        .await?;
    let alarms: Vec<(u64, i32)> = listed
        .0
        .alarms
        .iter()
        .map(|a| (a.member_id, a.alarm))
        .collect();
    if let AlarmCommand::Disarm = cmd {
        for (member, alarm) in &alarms {
            let kind = if *alarm == 1 {
                AlarmType::Nospace
            } else {
                AlarmType::Corrupt
            };
            let mut opts = AlarmOptions::new();
            opts.with_member(*member);
            ctx.call(client.alarm(AlarmAction::Deactivate, kind, Some(opts)))
                .await?;
        }
    }
    for (member, alarm) in alarms {
        println!("memberID:{member} alarm:{}", alarm_name(alarm));
    }
    Ok(())
}

pub(crate) async fn defrag(ctx: &Ctx, a: DefragArgs) -> anyhow::Result<()> {
    let mut failed = false;
    for ep in cluster::endpoints(ctx, a.cluster).await? {
        let result = async {
            let mut c = ctx.client_for(std::slice::from_ref(&ep)).await?;
            ctx.call(c.defragment()).await
        }
        .await;
        match result {
            Ok(_) => println!("Finished defragmenting etcd member[{ep}]"),
            Err(e) => {
                failed = true;
                eprintln!("Failed to defragment etcd member[{ep}] ({e:#})");
            }
        }
    }
    if failed {
        anyhow::bail!("defragmentation failed on some members");
    }
    Ok(())
}
