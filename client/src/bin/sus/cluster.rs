//! `sus cluster`: bootstrap, membership, leaders, status, replica checks.

use crate::{EndpointArgs, pounds, read};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Bootstrap a new cluster of started nodes (send to one of them, once).
    #[command(after_help = "\
Example:
  sus cluster init --endpoint 127.0.0.1:7401 --node 1=127.0.0.1:7401 --node 2=127.0.0.1:7402 \\
      --node 3=127.0.0.1:7403 --shards 8 --replication 3")]
    Init {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// A member as ID=HOST:PORT (repeat for each node).
        #[arg(long = "node", required = true, value_parser = parse_member)]
        nodes: Vec<(u64, String)>,
        /// Number of data shards (Raft groups).
        #[arg(long, default_value_t = 8)]
        shards: u32,
        /// Replicas per shard.
        #[arg(long, default_value_t = 3)]
        replication: u32,
        /// The password of the first user, `admin` (at least 12 characters).
        #[arg(long, env = "SUS_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: String,
        /// Succeed without change if the cluster is already initialised (for deploy scripts
        /// and init containers that run on every start).
        #[arg(long)]
        if_needed: bool,
    },
    /// Add a started node under a new id, and move shard replicas onto it.
    AddNode {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The new node as ID=HOST:PORT (an id never used in this cluster).
        #[arg(value_parser = parse_member)]
        node: (u64, String),
        /// Do not move shard replicas onto it.
        #[arg(long)]
        no_rebalance: bool,
    },
    /// Move a node's shard replicas to other nodes, then remove it from the cluster.
    RemoveNode {
        #[command(flatten)]
        endpoint: EndpointArgs,
        id: u64,
    },
    /// Make NODE the leader of GROUP (0 = meta, shard s = s + 1), e.g. before restarting a leader.
    TransferLeader {
        #[command(flatten)]
        endpoint: EndpointArgs,
        group: u64,
        node: u64,
    },
    /// Make the reference data of the node at --endpoint the version the cluster prices with
    /// (after installing new reference data on every node).
    SetRefdata {
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Read every replica of every shard and compare their content checksums (over rows, not
    /// file bytes). Exit status 0 when all replicas of each shard agree, 4 when not.
    Verify {
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Members: id, address, and which leads the meta group.
    #[command(after_help = "Example:\n  sus cluster members --format csv")]
    Members {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[arg(long, value_enum, default_value_t = read::Format::Table)]
        format: read::Format,
    },
    /// Shards: replicas, and the leader as the answering node sees it (`-` where it hosts no
    /// replica of the shard).
    #[command(after_help = "Example:\n  sus cluster shards --format json")]
    Shards {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[arg(long, value_enum, default_value_t = read::Format::Table)]
        format: read::Format,
    },
    /// Members, shard map, and the Raft groups of the node that answers.
    #[command(after_help = "\
Examples:
  sus cluster status
  sus cluster status --linearizable --format json   # the Raft groups only, for scripts")]
    Status {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// Read the shard map through the meta leader (read index).
        #[arg(long)]
        linearizable: bool,
        /// The Raft groups as a table, CSV, JSON or Parquet (default: a summary for people;
        /// `cluster members` and `cluster shards` give the rest).
        #[arg(long, value_enum)]
        format: Option<read::Format>,
    },
}

fn parse_member(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not ID=HOST:PORT"))?;
    let id = id
        .parse()
        .map_err(|_| format!("'{id}' is not a node id (a positive integer)"))?;
    if id == 0 {
        return Err("node id 0 is reserved".into());
    }
    Ok((id, addr.to_string()))
}

async fn run_verify(endpoint: EndpointArgs) -> sus_client::Result<ExitCode> {
    let contents = endpoint.client()?.replica_contents().await?;
    let mut ok = true;
    let (mut live, mut price) = (0u64, 0i64);
    println!(
        "{:>5} {:>4} {:>9} {:>8} {:>10} {:>16} checksum",
        "shard", "node", "applied", "version", "live", "price"
    );
    let mut shards: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for r in &contents {
        match &r.content {
            Ok(c) => {
                println!(
                    "{:>5} {:>4} {:>9} {:>8} {:>10} {:>16} {}",
                    r.shard,
                    r.node,
                    c.last_applied,
                    c.version,
                    c.live_records,
                    pounds(c.price_pence),
                    c.checksum
                );
                let sums = shards.entry(r.shard).or_default();
                if sums.is_empty() {
                    live += c.live_records;
                    price += c.price_pence;
                }
                sums.push(c.checksum.clone());
            }
            Err(e) => {
                ok = false;
                println!("{:>5} {:>4} unreadable: {e}", r.shard, r.node);
            }
        }
    }
    for (shard, sums) in &shards {
        if sums.iter().any(|s| s != &sums[0]) {
            ok = false;
            println!("shard {shard}: replicas DIFFER");
        }
    }
    println!("total: {live} live records, {}", pounds(price));
    println!(
        "{}",
        if ok {
            "all replicas agree"
        } else {
            "replicas do not agree (or could not be read)"
        }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

pub async fn run_cluster(c: ClusterCommand) -> sus_client::Result<ExitCode> {
    let status = match c {
        ClusterCommand::Init {
            endpoint,
            nodes,
            shards,
            replication,
            admin_password,
            if_needed,
        } => {
            match endpoint
                .client()?
                .init(&nodes, shards, replication, &admin_password)
                .await
            {
                Err(sus_client::Error::AlreadyInitialised) if if_needed => {
                    println!("the cluster is already initialised");
                    return Ok(ExitCode::SUCCESS);
                }
                other => other?,
            }
        }
        ClusterCommand::AddNode {
            endpoint,
            node,
            no_rebalance,
        } => {
            endpoint
                .client()?
                .add_node(node.0, &node.1, !no_rebalance)
                .await?
        }
        ClusterCommand::RemoveNode { endpoint, id } => endpoint.client()?.remove_node(id).await?,
        ClusterCommand::TransferLeader {
            endpoint,
            group,
            node,
        } => endpoint.client()?.transfer_leader(group, node).await?,
        ClusterCommand::Verify { endpoint } => return run_verify(endpoint).await,
        ClusterCommand::SetRefdata { endpoint } => endpoint.client()?.set_refdata().await?,
        ClusterCommand::Status {
            endpoint,
            linearizable,
            format: None,
        } => endpoint.client()?.status(linearizable).await?,
        ClusterCommand::Status {
            endpoint,
            linearizable,
            format: Some(format),
        } => {
            let status = endpoint.client()?.status(linearizable).await?;
            let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
            let rows: Vec<Vec<String>> = status
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.group.to_string(),
                        g.leader.to_string(),
                        g.term.to_string(),
                        g.last_applied.to_string(),
                        g.last_log.to_string(),
                        g.snapshot_index.to_string(),
                        ids(&g.voters),
                        ids(&g.learners),
                    ]
                })
                .collect();
            read::write_rows(
                format,
                &[
                    "group", "leader", "term", "applied", "last_log", "snapshot", "voters",
                    "learners",
                ],
                &rows,
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        ClusterCommand::Members { endpoint, format } => {
            let status = endpoint.client()?.status(true).await?;
            let rows: Vec<Vec<String>> = status
                .nodes
                .iter()
                .map(|n| {
                    let role = if n.id == status.meta_leader {
                        "meta leader"
                    } else {
                        "member"
                    };
                    vec![n.id.to_string(), n.addr.clone(), role.to_string()]
                })
                .collect();
            read::write_rows(format, &["id", "addr", "role"], &rows)?;
            return Ok(ExitCode::SUCCESS);
        }
        ClusterCommand::Shards { endpoint, format } => {
            let status = endpoint.client()?.status(true).await?;
            let rows: Vec<Vec<String>> = status
                .shards
                .iter()
                .map(|s| {
                    let leader = status
                        .groups
                        .iter()
                        .find(|g| g.group == u64::from(s.shard) + 1)
                        .map(|g| g.leader.to_string())
                        .unwrap_or_else(|| "-".into());
                    let replicas: Vec<String> = s.replicas.iter().map(u64::to_string).collect();
                    vec![s.shard.to_string(), replicas.join(" "), leader]
                })
                .collect();
            read::write_rows(format, &["shard", "replicas", "leader"], &rows)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!(
        "node {} (meta leader {}), reference data {} (this node: {})",
        status.node, status.meta_leader, status.refdata, status.node_refdata
    );
    for n in &status.nodes {
        println!("  member {:>3} {}", n.id, n.addr);
    }
    for s in &status.shards {
        println!("  shard {:>3} replicas {:?}", s.shard, s.replicas);
    }
    println!(
        "  {:>5} {:>6} {:>5} {:>9} {:>9} {:>9} {:<12} learners",
        "group", "leader", "term", "applied", "last log", "snapshot", "voters"
    );
    for g in &status.groups {
        println!(
            "  {:>5} {:>6} {:>5} {:>9} {:>9} {:>9} {:<12} {:?}",
            g.group,
            g.leader,
            g.term,
            g.last_applied,
            g.last_log,
            g.snapshot_index,
            format!("{:?}", g.voters),
            g.learners
        );
    }
    Ok(ExitCode::SUCCESS)
}
