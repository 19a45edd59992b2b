//! `sus login`, `sus user` and `sus audit`: tokens, users and roles, the audit log.

use crate::{EndpointArgs, read};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password comes from SUS_NEW_PASSWORD or a prompt.
    #[command(after_help = "\
Examples:
  sus user add rrv-analyst --role provider --org RRV
  sus user add icb-analyst --role commissioner --org 15F --tier pseudonymised
  sus user add csu --role shared --org 0DF --delegate 15F --delegate 14L
Roles: admin, provider, commissioner, national, shared, auditor.
Tiers: identifiable, pseudonymised, anonymised (default by role).")]
    Add {
        #[command(flatten)]
        endpoint: EndpointArgs,
        name: String,
        #[arg(long)]
        role: String,
        /// The user's organisation (ODS code).
        #[arg(long, default_value = "")]
        org: String,
        /// The highest tier the user may read at.
        #[arg(long)]
        tier: Option<String>,
        /// For role shared: an organisation that delegated to it (repeat).
        #[arg(long = "delegate")]
        delegated: Vec<String>,
    },
    /// List users.
    #[command(after_help = "Example:\n  sus user list --format csv")]
    List {
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[arg(long, value_enum, default_value_t = read::Format::Table)]
        format: read::Format,
    },
    /// Revoke a user and every token issued to it.
    #[command(after_help = "Example:\n  sus user revoke rrv-analyst")]
    Revoke {
        #[command(flatten)]
        endpoint: EndpointArgs,
        name: String,
    },
}

/// A secret from an environment variable, or read from the terminal (stdin) after a prompt.
fn secret(var: &str, prompt: &str) -> sus_client::Result<String> {
    if let Ok(v) = std::env::var(var) {
        return Ok(v);
    }
    eprint!("{prompt}: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| sus_client::Error::io("stdin", e))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub async fn run_login(
    endpoint: EndpointArgs,
    user: String,
    purpose: String,
    ttl: u64,
) -> sus_client::Result<ExitCode> {
    let password = secret("SUS_PASSWORD", &format!("password for {user}"))?;
    let client = endpoint.client()?.with_token(None);
    let reply = client.login(&user, &password, &purpose, ttl).await?;
    let path = &endpoint.token_file;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| sus_client::Error::io(dir, e))?;
    }
    std::fs::write(path, &reply.token).map_err(|e| sus_client::Error::io(path, e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| sus_client::Error::io(path, e))?;
    let expires = chrono::DateTime::from_timestamp(reply.expires, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    println!(
        "logged in as {user}; token saved in {} (expires {expires})",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn tier_name(t: i32) -> &'static str {
    match sus_proto::v1::Tier::try_from(t) {
        Ok(sus_proto::v1::Tier::Identifiable) => "identifiable",
        Ok(sus_proto::v1::Tier::Pseudonymised) => "pseudonymised",
        Ok(sus_proto::v1::Tier::Anonymised) => "anonymised",
        _ => "-",
    }
}

pub async fn run_user(c: UserCommand) -> sus_client::Result<ExitCode> {
    let print = |users: &[sus_client::cluster::UserInfo], format: read::Format| {
        let rows: Vec<Vec<String>> = users
            .iter()
            .map(|u| {
                vec![
                    u.name.clone(),
                    u.role.clone(),
                    u.org.clone(),
                    tier_name(u.max_tier).to_string(),
                    u.delegated.join(","),
                    u.revoked.to_string(),
                ]
            })
            .collect();
        read::write_rows(
            format,
            &["name", "role", "org", "max_tier", "delegated", "revoked"],
            &rows,
        )
    };
    match c {
        UserCommand::Add {
            endpoint,
            name,
            role,
            org,
            tier,
            delegated,
        } => {
            let max_tier = match tier.as_deref() {
                None => sus_proto::v1::Tier::Unspecified,
                Some("identifiable") => sus_proto::v1::Tier::Identifiable,
                Some("pseudonymised") => sus_proto::v1::Tier::Pseudonymised,
                Some("anonymised") => sus_proto::v1::Tier::Anonymised,
                Some(other) => {
                    return Err(sus_client::Error::Config(format!(
                        "unknown tier '{other}' (identifiable, pseudonymised, anonymised)"
                    )));
                }
            };
            let password = secret("SUS_NEW_PASSWORD", &format!("new password for {name}"))?;
            let user = sus_client::cluster::UserInfo {
                name,
                role,
                org,
                max_tier: max_tier as i32,
                delegated,
                ..Default::default()
            };
            print(
                &[endpoint.client()?.add_user(user, &password).await?],
                read::Format::Table,
            )?;
        }
        UserCommand::List { endpoint, format } => {
            print(&endpoint.client()?.list_users().await?, format)?;
        }
        UserCommand::Revoke { endpoint, name } => {
            print(
                &[endpoint.client()?.revoke_user(&name).await?],
                read::Format::Table,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_audit(
    endpoint: EndpointArgs,
    from: u64,
    limit: u64,
    format: Option<read::Format>,
) -> sus_client::Result<ExitCode> {
    let log = endpoint.client()?.audit_log(from, limit).await?;
    if let Some(format) = format {
        let rows: Vec<Vec<String>> = log
            .entries
            .iter()
            .map(|e| {
                let r = &e.record;
                vec![
                    e.index.to_string(),
                    chrono::DateTime::from_timestamp_millis(r.time_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                    r.node.to_string(),
                    r.user.clone(),
                    r.role.clone(),
                    r.org.clone(),
                    r.purpose.clone(),
                    r.action.clone(),
                    r.tier.clone(),
                    r.dataset.clone(),
                    r.filter.clone(),
                    r.view.clone(),
                    r.rows.to_string(),
                    r.detail.clone(),
                ]
            })
            .collect();
        read::write_rows(
            format,
            &[
                "index", "time", "node", "user", "role", "org", "purpose", "action", "tier",
                "dataset", "filter", "view", "rows", "detail",
            ],
            &rows,
        )?;
        // The data goes to stdout; the verdict to stderr (and the exit status).
        return Ok(match (from, log.verify()) {
            (0, Ok(())) => {
                eprintln!("{} entries; hash chain verified", log.entries.len());
                ExitCode::SUCCESS
            }
            (0, Err(e)) => {
                eprintln!("HASH CHAIN BROKEN: {e}");
                ExitCode::from(4)
            }
            _ => ExitCode::SUCCESS,
        });
    }
    for e in &log.entries {
        let r = &e.record;
        let time = chrono::DateTime::from_timestamp_millis(r.time_ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        println!(
            "{:>6} {time} node {} {} ({} {}) {:<9} {:<13} {} rows {} [{}] purpose: {} {}",
            e.index,
            r.node,
            r.user,
            r.role,
            r.org,
            r.action,
            r.tier,
            r.dataset,
            r.rows,
            r.filter,
            r.purpose,
            r.detail
        );
    }
    if from == 0 {
        match log.verify() {
            Ok(()) => println!("{} entries; hash chain verified", log.entries.len()),
            Err(e) => {
                println!("HASH CHAIN BROKEN: {e}");
                return Ok(ExitCode::from(4));
            }
        }
    } else {
        println!(
            "{} entries (chain verified only from entry 0)",
            log.entries.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
