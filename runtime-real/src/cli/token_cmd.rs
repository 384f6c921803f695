//! `roster token`: credentials with roles. `create` prints the new secret once (only its
//! hash reaches the cluster); `ls` lists what the cluster knows; `revoke` forgets one on
//! every node; `new-key` prints a fresh secret for a token or peer key file.

use super::ClientArgs;
use super::failure::CliError;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    op: TokenOp,
}

#[derive(Subcommand, Debug)]
enum TokenOp {
    /// Make a token: prints its id and its secret (shown this once, kept nowhere).
    Create {
        /// admin, read, launch, agent (with --server) or member (with --member).
        #[arg(long)]
        role: String,
        /// A name for the audit trail and `token ls` (default: the role).
        #[arg(long)]
        name: Option<String>,
        /// The server an agent token speaks for.
        #[arg(long)]
        server: Option<u64>,
        /// The member a member token speaks for (`process:N`).
        #[arg(long)]
        member: Option<String>,
        /// Lifetime, e.g. `90s`, `12h`, `30d` (default: until revoked).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List the tokens the cluster knows (never a secret).
    Ls,
    /// Revoke a token: every node refuses it once the revocation applies there.
    Revoke {
        /// The token's id (`token ls`).
        id: u64,
    },
    /// Print a fresh random secret (256 bits as hex), or write it to a new file of mode 0600.
    NewKey {
        /// Write the secret to this new file (mode 0600, readable by its owner only; an
        /// existing file is refused) instead of printing it: a token or peer key file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

pub async fn run(args: TokenArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    match args.op {
        TokenOp::NewKey { out: None } => {
            outln!("{}", roster_real::server::launch::new_secret());
            Ok(ExitCode::SUCCESS)
        }
        TokenOp::NewKey { out: Some(path) } => {
            super::secret_file::write_new(&path, &roster_real::server::launch::new_secret())?;
            outln!("wrote a new secret to {} (mode 0600)", path.display());
            Ok(ExitCode::SUCCESS)
        }
        TokenOp::Create { role, name, server, member, ttl } => {
            let role_value = roster_real::server::authority::parse_role(&role, server, member.as_deref())?;
            let ttl_ms = ttl.as_deref().map(parse_duration_ms).transpose()?;
            let client = c.connect().await?;
            let secret = roster_real::server::launch::new_secret();
            let expires = ttl_ms.map(|ttl| roster_real::rt::clock::unix_ms().saturating_add(ttl));
            let name = name.unwrap_or(role);
            let id = client.create_token(&secret, &name, role_value, expires).await?;
            if c.json {
                let json =
                    serde_json::json!({ "id": id.0, "name": name, "secret": secret, "expires_at_unix_ms": expires });
                println!("{json}");
            } else {
                eprintln!("created {id} {name:?} ({}); its secret, shown this once:", role_value.describe());
                println!("{secret}");
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenOp::Ls => {
            let client = c.connect().await?;
            let tokens = client.tokens().await?;
            if c.json {
                let list = roster_real::view::TokenList {
                    tokens: tokens.iter().map(roster_real::view::TokenView::from).collect(),
                };
                println!("{}", serde_json::to_string(&list)?);
            } else {
                for t in &tokens {
                    let expiry = t.expires_at_unix_ms.map(|at| format!("  expires {at}")).unwrap_or_default();
                    println!("{:<10} {:<24} {}{expiry}", t.id.to_string(), t.name, t.role.describe());
                }
                if tokens.is_empty() {
                    eprintln!("no tokens besides the bootstrap token file");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenOp::Revoke { id } => {
            let client = c.connect().await?;
            client.revoke_token(roster_kernel::TokenId(id)).await?;
            eprintln!("revoked token-{id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `90s`, `15m`, `12h`, `30d`, or plain milliseconds.
fn parse_duration_ms(text: &str) -> Result<u64, CliError> {
    let bad = || CliError::Usage(format!("bad --ttl {text:?}: expected a number with s, m, h or d (e.g. 12h)"));
    let (number, unit_ms) = match text.char_indices().last() {
        Some((i, 's')) => (&text[..i], 1_000),
        Some((i, 'm')) => (&text[..i], 60_000),
        Some((i, 'h')) => (&text[..i], 3_600_000),
        Some((i, 'd')) => (&text[..i], 86_400_000),
        _ => (text, 1),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    n.checked_mul(unit_ms).filter(|ms| *ms > 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn ttls_read_with_their_units() {
        assert_eq!(parse_duration_ms("90s").ok(), Some(90_000));
        assert_eq!(parse_duration_ms("2h").ok(), Some(7_200_000));
        assert_eq!(parse_duration_ms("1500").ok(), Some(1_500));
        assert!(parse_duration_ms("0s").is_err());
        assert!(parse_duration_ms("soon").is_err());
    }
}
