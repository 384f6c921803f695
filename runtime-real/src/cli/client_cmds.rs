//! Client commands: status, get, ls, put, del, kv, watch, member.
//!
//! With `--json` each prints one JSON document (watch: one per line) of the types in
//! `roster_real::view`, which HTTP answers too (docs/json.md shows each); a failure prints
//! the error HTTP would give (`failure.rs`).

use super::ClientArgs;
use super::failure::CliError;
use clap::{Args, Subcommand};
use roster_kernel::{
    Command, ListFilter, MemberId, MemberKind, MemberStatus, ProcessPatch, Query, QueryResult, Reply, ServerId,
    ServerPatch,
};
use roster_real::client::ClientError;
use roster_real::client::describe::{self, KnownServers, SubjectKind};
use roster_real::net::wire::{ClusterStatus, Consistency};
use roster_real::view;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct GetArgs {
    /// `server-ID`, `process-ID` (or `server:ID`, `process:ID`), or a member's name.
    member: String,
    /// Read from the contacted node without confirming with the leader (may be stale).
    #[arg(long)]
    stale: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// `servers` or `processes` (default: both).
    #[arg(long)]
    kind: Option<String>,
    /// Only this server and the processes it hosts.
    #[arg(long)]
    server: Option<u64>,
    /// `online` or `draining`.
    #[arg(long)]
    status: Option<String>,
    /// Every label given must match, `k=v`.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Read from the contacted node without confirming with the leader (may be stale).
    #[arg(long)]
    stale: bool,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    /// `server-ID`, `process-ID` (or `server:ID`, `process:ID`), or a member's name.
    member: String,
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// `online` or `draining`.
    #[arg(long)]
    status: Option<String>,
    /// Processes: set a label `k=v`, or remove it with `k=`.
    #[arg(long = "label")]
    labels: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DelArgs {
    /// `server-ID`, `process-ID` (or `server:ID`, `process:ID`), or a member's name.
    member: String,
}

#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Subcommand, Debug)]
enum KvOp {
    /// Print the value of KEY (exit 1 if it is absent).
    Get {
        /// The key.
        key: String,
        /// Read from the contacted node without confirming with the leader (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// Set KEY to VALUE, or to what standard input (`-`) or a file (`--file`) holds.
    Put {
        /// The key.
        key: String,
        /// The value (UTF-8 text; the cluster takes at most 64 KiB by default), or `-` to read
        /// it from standard input.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// List keys and values in key order, all or those starting with PREFIX.
    Ls {
        /// Only keys that start with this.
        prefix: Option<String>,
        /// Most keys to list.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_KV_LS_ITEMS)))]
        limit: u32,
        /// Print the keys only.
        #[arg(long)]
        keys_only: bool,
        /// Read from the contacted node without confirming with the leader (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// Remove KEY.
    Del {
        /// The key.
        key: String,
    },
    /// Set KEY to NEW only if it now holds EXPECTED (`--expect-absent` / `--delete`).
    Cas {
        /// The key.
        key: String,
        /// The value KEY must hold now.
        #[arg(long)]
        expect: Option<String>,
        /// KEY must be absent now.
        #[arg(long, conflicts_with = "expect")]
        expect_absent: bool,
        /// The value to set.
        #[arg(long)]
        new: Option<String>,
        /// Remove KEY instead of setting it.
        #[arg(long, conflicts_with = "new")]
        delete: bool,
    },
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Events after this revision (default: from now).
    #[arg(long)]
    after: Option<u64>,
    /// Stop after this many events shown (default: run until ctrl-c).
    #[arg(long)]
    count: Option<u64>,
    /// Only events about servers, processes, kv keys or tokens, or the audit trail of
    /// admin actions (`audit`).
    #[arg(long, value_enum)]
    kind: Option<WatchKind>,
    /// Only events about the server or process of this name, or this kv key.
    #[arg(long)]
    name: Option<String>,
    /// Also show the periodic resource reports (server and process updates that change
    /// only the averaged CPU and memory).
    #[arg(long)]
    resources: bool,
    /// Give up (exit 1) when no node has taken the watch for this long; by default it
    /// retries across an outage until ctrl-c, and resumes after the last revision seen.
    #[arg(long)]
    outage_timeout_s: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum WatchKind {
    #[value(alias = "servers")]
    Server,
    #[value(alias = "processes")]
    Process,
    Kv,
    #[value(alias = "tokens")]
    Token,
    Audit,
}

#[derive(Args, Debug)]
pub struct MemberArgs {
    #[command(subcommand)]
    op: MemberOp,
}

#[derive(Subcommand, Debug)]
enum MemberOp {
    /// Add server node ID at HOST:PORT (start it first with `roster node` without --peers).
    Add {
        /// The new node's id.
        id: u64,
        /// The new node's HOST:PORT (its --listen or --advertise).
        addr: String,
    },
    /// Remove server node ID from the voters.
    Remove {
        /// The node to remove.
        id: u64,
    },
    /// Bring back voter ID after it lost its data directory: demote it to learner,
    /// replicate to it from scratch, wait until it caught up, promote it again.
    Replace {
        /// The node to bring back.
        id: u64,
    },
    /// The Raft members: id, address, voter or learner, and which one leads.
    List,
    /// Hand leadership to another voter (the most up-to-date one unless --to names it),
    /// e.g. before taking the leader down; prints the new leader.
    TransferLeader {
        /// The voter to lead next.
        #[arg(long)]
        to: Option<u64>,
    },
}

fn parse_status(s: &str) -> Result<MemberStatus, CliError> {
    match s {
        "online" => Ok(MemberStatus::Online),
        "draining" => Ok(MemberStatus::Draining),
        _ => Err(CliError::Usage(format!("bad status {s:?}: expected online or draining"))),
    }
}

pub fn parse_label(s: &str) -> Result<(String, String), CliError> {
    let (k, v) = s.split_once('=').ok_or_else(|| CliError::Usage(format!("bad label {s:?}: expected KEY=VALUE")))?;
    if k.is_empty() {
        return Err(CliError::Usage(format!("bad label {s:?}: empty key")));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Most keys one `kv ls` lists (as the HTTP range's most).
const MAX_KV_LS_ITEMS: u32 = 10_000;

/// The first key after every key that starts with `prefix` (`None`: there is none, list
/// to the last key). Keys order by their UTF-8 bytes, which is the order of code points.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next code point, skipping the surrogates, which no `char` holds.
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn consistency(stale: bool) -> Consistency {
    if stale { Consistency::Stale } else { Consistency::Linearizable }
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn done(json: bool, reply: &Reply) -> Result<ExitCode, CliError> {
    if json {
        print_json(&view::WriteReply::from(reply))?;
    } else {
        match reply {
            Reply::Done { revision } => outln!("ok (revision {revision})"),
            other => outln!("{other:?}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn fetch_status(args: &ClientArgs) -> Result<ClusterStatus, CliError> {
    let client = args.connect().await?;
    Ok(client.status().await?)
}

pub fn render_status(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let leader = s.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
    out.push_str(&format!(
        "leader {leader}  term {}  commit {}  applied {}  revision {}  (answered by node {})\n",
        s.term,
        s.commit_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        s.applied_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        s.revision,
        s.node
    ));
    if let Some(reason) = &s.waiting {
        out.push_str(&format!("waiting: {reason}\n"));
    }
    if let Some(cluster) = &s.cluster_id {
        out.push_str(&format!("cluster: {cluster}\n"));
    }
    let voters: Vec<String> = s.voters.iter().map(|(id, a)| format!("{id}@{a}")).collect();
    out.push_str(&format!("voters: {}\n", voters.join(" ")));
    if !s.learners.is_empty() {
        let l: Vec<String> = s.learners.iter().map(|(id, a)| format!("{id}@{a}")).collect();
        out.push_str(&format!("learners: {}\n", l.join(" ")));
    }
    out.push_str(&format!("servers ({}):\n", s.servers.len()));
    out.push_str("  ID    NAME              STATUS          HEARTBEAT   CPU(avg/cap)     MEM(avg/cap)\n");
    for st in &s.servers {
        let e = &st.entry;
        let hb = st.heartbeat_age_ms.map(|a| format!("{a} ms ago")).unwrap_or_else(|| "-".into());
        let (cpu, mem) = match e.resources {
            Some(r) => (format!("{}%", r.cpu_percent_avg), format!("{} MiB", r.mem_bytes_used_avg >> 20)),
            None => ("-".into(), "-".into()),
        };
        out.push_str(&format!(
            "  {:<5} {:<17} {:<15} {:<11} {:>5}/{:<9} {:>9}/{} MiB\n",
            e.id.0,
            e.info.name,
            status_text(e),
            hb,
            cpu,
            format!("{}%", e.info.cpu_capacity_percent),
            mem,
            e.info.mem_capacity_bytes >> 20
        ));
    }
    let p = &s.processes;
    out.push_str(&format!(
        "processes: {} ({} online, {} draining; list them with `roster ls --kind processes`)\n",
        p.total, p.online, p.draining
    ));
    out.push_str(&state_text(&s.state));
    if let Some(brake) = s.expiry.brake {
        out.push_str(&format!(
            "ALARM expiry brake: {} of {} members went silent at once; every expiry waits {} ms more (a partition or an overloaded leader?)\n",
            brake.suspects, brake.members, brake.hold_ms
        ));
    }
    out
}

/// The state budget's line, and the alarm's when it is on.
fn state_text(state: &roster_kernel::StateUsage) -> String {
    let used = &state.used;
    let mut text = format!(
        "state: {} of {} bytes (kv {}, events {}, replies {}, labels {})\n",
        used.total(),
        state.budget_bytes,
        used.kv,
        used.events,
        used.replies,
        used.labels
    );
    if state.alarm {
        text.push_str(
            "ALARM state budget: writes may be refused; delete keys, labels or processes, or raise state_budget_bytes\n",
        );
    }
    text
}

/// Averaged CPU (percent of one core) and memory (MiB), or `-` before the first report.
fn resource_text(resources: Option<roster_kernel::ResourceAverage>) -> (String, String) {
    match resources {
        Some(r) => (format!("{}%", r.cpu_percent_avg), format!("{} MiB", r.mem_bytes_used_avg >> 20)),
        None => ("-".into(), "-".into()),
    }
}

/// A server's status, with `drained` when an operator drained it (`roster server drain`).
fn status_text(s: &roster_kernel::ServerEntry) -> String {
    if s.drained { format!("{:?},drained", s.status) } else { format!("{:?}", s.status) }
}

/// `roster status`: exits 1 (after printing) when the answering node knows no leader, so
/// that a readiness script is not fooled by a cluster that cannot serve writes.
pub async fn status(args: ClientArgs) -> Result<ExitCode, CliError> {
    let s = args.connect().await?.status().await?;
    if args.json {
        print_json(&view::StatusView::from(&s))?;
    } else {
        out!("{}", render_status(&s));
    }
    if s.leader.is_none() {
        eprintln!("error: node {} knows no leader: the cluster may be electing or have lost its quorum", s.node);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn get(args: GetArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    let member = super::lookup::resolve(&client, &args.member, consistency(args.stale)).await?;
    let query = match member {
        MemberId::Server(id) => Query::GetServer(id),
        MemberId::Process(id) => Query::GetProcess(id),
    };
    let reply = client.query(query, consistency(args.stale)).await?;
    let found = match &reply.result {
        QueryResult::Server(s) => s.is_some(),
        QueryResult::Process(p) => p.is_some(),
        _ => false,
    };
    if !found {
        let message = format!("{member} not found (it may have left: see `roster tombstones`)");
        return Err(CliError::NotFound { message, details: serde_json::json!({ "revision": reply.revision }) });
    }
    if c.json {
        match reply.result {
            QueryResult::Server(Some(s)) => {
                print_json(&view::OneServer { revision: reply.revision, server: view::ServerView::from(&s) })?
            }
            QueryResult::Process(Some(p)) => {
                print_json(&view::OneProcess { revision: reply.revision, process: view::ProcessView::from(&p) })?
            }
            _ => {}
        }
    } else {
        match reply.result {
            QueryResult::Server(Some(s)) => out!("{}", render_server(&s)),
            QueryResult::Process(Some(p)) => out!("{}", render_process(&p)),
            _ => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `roster get server-ID`: one field per line.
fn render_server(s: &roster_kernel::ServerEntry) -> String {
    let (cpu, mem) = match s.resources {
        Some(r) => (format!("{}%", r.cpu_percent_avg), format!("{} MiB", r.mem_bytes_used_avg >> 20)),
        None => ("-".into(), "-".into()),
    };
    format!(
        "server-{id}  {name}\n  status      {status}\n  api         {api}\n  raft        {raft}\n  \
         cpu         {cpu} of {cap_cpu}%\n  memory      {mem} of {cap_mem} MiB\n  started     {started}\n  \
         revisions   registered {reg}, updated {upd}\n",
        id = s.id.0,
        name = s.info.name,
        status = status_text(s),
        api = s.info.api_addr,
        raft = s.info.raft_addr,
        cap_cpu = s.info.cpu_capacity_percent,
        cap_mem = s.info.mem_capacity_bytes >> 20,
        started = unix_ms_text(s.info.started_at_unix_ms),
        reg = s.registered_rev,
        upd = s.updated_rev,
    )
}

/// `roster get process-ID`: one field per line.
fn render_process(p: &roster_kernel::ProcessEntry) -> String {
    let labels: Vec<String> = p.info.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let service = match p.info.service_port {
        Some(port) => format!("{}:{port}", p.info.service_host),
        None if p.info.service_host.is_empty() => "-".into(),
        None => p.info.service_host.clone(),
    };
    format!(
        "process-{id}  {name}\n  status      {status:?}\n  server      server-{server}\n  serves      {service}\n  \
         labels      {labels}\n  cpu         {cpu} (averaged)\n  memory      {mem} (averaged)\n  \
         reserved    cpu {rcpu}%, memory {rmem} MiB\n  started     {started}\n  \
         revisions   registered {reg}, updated {upd}\n",
        id = p.id.0,
        name = p.info.name,
        status = p.status,
        server = p.info.server.0,
        labels = if labels.is_empty() { "-".into() } else { labels.join(",") },
        cpu = resource_text(p.resources).0,
        mem = resource_text(p.resources).1,
        rcpu = p.info.reserved.cpu_percent_avg,
        rmem = p.info.reserved.mem_bytes_used_avg >> 20,
        started = unix_ms_text(p.info.started_at_unix_ms),
        reg = p.registered_rev,
        upd = p.updated_rev,
    )
}

/// Unix milliseconds as UTC `YYYY-MM-DD HH:MM:SS` (the record's times are for display).
pub fn unix_ms_text(ms: u64) -> String {
    roster_client::tls::utc(i64::try_from(ms / 1000).unwrap_or(i64::MAX))
}

#[derive(Args, Debug)]
pub struct TombstonesArgs {
    /// Most departures to show, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Read from the contacted node without confirming with the leader (may be stale).
    #[arg(long)]
    stale: bool,
}

/// `roster tombstones`: members that left, how and when, newest first.
pub async fn tombstones(args: TombstonesArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    let reply = client.query(Query::Tombstones { limit: args.limit }, consistency(args.stale)).await?;
    let list = match reply.result {
        QueryResult::Tombstones(list) => list,
        other => return Err(CliError::unexpected("a tombstones query", &other)),
    };
    if c.json {
        let tombstones = list.iter().map(view::TombstoneView::from).collect();
        print_json(&view::Tombstones { revision: reply.revision, tombstones })?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        outln!("no member has left yet");
    }
    for t in list {
        let member = match &t.subject {
            roster_kernel::TombstoneSubject::Server(s) => MemberId::Server(s.id),
            roster_kernel::TombstoneSubject::Process(p) => MemberId::Process(p.id),
        };
        let when = unix_ms_text(t.left_at_unix_ms);
        let event = roster_kernel::Event {
            revision: t.left_rev,
            kind: roster_kernel::EventKind::Departed { member, tombstone: t },
        };
        outln!("{}  ({when})", roster_real::client::describe::describe(&event, |_| None));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn ls(args: LsArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    let kind = match args.kind.as_deref() {
        None => None,
        Some("servers" | "server") => Some(MemberKind::Server),
        Some("processes" | "process") => Some(MemberKind::Process),
        Some(other) => return Err(CliError::Usage(format!("bad --kind {other:?}: expected servers or processes"))),
    };
    let status = args.status.as_deref().map(parse_status).transpose()?;
    let labels = args.labels.iter().map(|l| parse_label(l)).collect::<Result<_, _>>()?;
    let filter = ListFilter { kind, server: args.server.map(ServerId), status, labels };
    let client = c.connect().await?;
    let consistency = consistency(args.stale);
    // Page by page: text goes out as each page comes; JSON is one document, so it is
    // gathered first (the first page's revision is the list's).
    let mut listed = roster_real::client::MemberList::default();
    let mut after = None;
    let mut first = true;
    loop {
        let page = client.list_page(filter.clone(), after, roster_real::client::LIST_PAGE_LIMIT, consistency).await?;
        if first {
            listed.revision = page.revision;
            first = false;
        }
        if c.json {
            listed.servers.extend(page.servers);
            listed.processes.extend(page.processes);
        } else {
            print_members(&page.servers, &page.processes);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if c.json {
        // As HTTP's pages: `/v1/servers` or `/v1/processes` with every page read (`next`
        // null), or both lists.
        let roster_real::client::MemberList { revision, servers, processes } = listed;
        let servers = servers.iter().map(view::ServerView::from).collect();
        let processes = processes.iter().map(view::ProcessView::from).collect();
        match kind {
            Some(MemberKind::Server) => print_json(&view::ServerPage { revision, servers, next: None })?,
            Some(MemberKind::Process) => print_json(&view::ProcessPage { revision, processes, next: None })?,
            None => print_json(&view::MemberList { revision, servers, processes })?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_members(servers: &[roster_kernel::ServerEntry], processes: &[roster_kernel::ProcessEntry]) {
    for s in servers {
        outln!("server-{:<6} {:<20} {} {}", s.id.0, s.info.name, status_text(s), s.info.api_addr);
    }
    for p in processes {
        let labels: Vec<String> = p.info.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let (cpu, mem) = resource_text(p.resources);
        outln!(
            "process-{:<5} {:<20} {:?} server-{} cpu {} mem {} {}",
            p.id.0,
            p.info.name,
            p.status,
            p.info.server.0,
            cpu,
            mem,
            labels.join(",")
        );
    }
}

pub async fn put(args: PutArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    let member = super::lookup::resolve(&client, &args.member, Consistency::Linearizable).await?;
    let status = args.status.as_deref().map(parse_status).transpose()?;
    let command = match member {
        MemberId::Server(id) => {
            if !args.labels.is_empty() {
                return Err(CliError::Usage("servers have no labels; --label applies to processes".into()));
            }
            Command::PutServer {
                id,
                patch: ServerPatch { name: args.name, status, ..Default::default() },
                create: None,
            }
        }
        MemberId::Process(id) => {
            let mut patch = ProcessPatch { name: args.name, status, ..Default::default() };
            for l in &args.labels {
                let (k, v) = parse_label(l)?;
                patch.labels.insert(k, (!v.is_empty()).then_some(v));
            }
            Command::PutProcess { id, patch }
        }
    };
    let reply = client.execute(command).await?;
    done(c.json, &reply)
}

pub async fn del(args: DelArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    let member = super::lookup::resolve(&client, &args.member, Consistency::Linearizable).await?;
    let reply = client.execute(Command::Delete { member }).await?;
    done(c.json, &reply)
}

pub async fn kv(args: KvArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    match args.op {
        KvOp::Get { key, stale } => kv_get(key, stale, &c).await,
        KvOp::Put { key, value, file } => {
            let value = super::value_input::read(value.as_deref(), file.as_deref())?;
            let client = c.connect().await?;
            let reply = client.execute(Command::KvPut { key, value }).await?;
            done(c.json, &reply)
        }
        KvOp::Ls { prefix, limit, keys_only, stale } => kv_ls(prefix, limit, keys_only, stale, &c).await,
        KvOp::Del { key } => {
            let client = c.connect().await?;
            let reply = client.execute(Command::KvDelete { key }).await?;
            done(c.json, &reply)
        }
        KvOp::Cas { key, expect, expect_absent, new, delete } => {
            if expect.is_none() && !expect_absent {
                return Err(CliError::Usage("kv cas needs --expect VALUE or --expect-absent".into()));
            }
            if new.is_none() && !delete {
                return Err(CliError::Usage("kv cas needs --new VALUE or --delete".into()));
            }
            let client = c.connect().await?;
            let reply = client.execute(Command::KvCas { key, expected: expect, new }).await?;
            if c.json {
                print_json(&view::WriteReply::from(&reply))?;
            } else if let Reply::Cas { swapped, current, revision } = &reply {
                let cur = current.as_deref().unwrap_or("<absent>");
                outln!("{} (current {cur}, revision {revision})", if *swapped { "swapped" } else { "not swapped" });
            }
            match reply {
                Reply::Cas { swapped: false, .. } => Ok(ExitCode::from(1)),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
    }
}

/// `kv get`: the value, or `NotFound` with the revision its absence was read at.
async fn kv_get(key: String, stale: bool, c: &ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    let reply = client.query(Query::KvGet { key: key.clone() }, consistency(stale)).await?;
    let v = match reply.result {
        QueryResult::KvValue(v) => v,
        other => return Err(CliError::unexpected("kv get", &other)),
    };
    let Some(value) = v else {
        // As HTTP's 404: the revision the absence was read at, to watch from.
        let message = format!("key {key:?} is not set");
        return Err(CliError::NotFound { message, details: serde_json::json!({ "revision": reply.revision }) });
    };
    if c.json {
        print_json(&view::KvValue { key, value, revision: reply.revision })?;
    } else {
        outln!("{value}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `kv ls`: the keys under a prefix, page by page, up to `limit`.
async fn kv_ls(
    prefix: Option<String>,
    limit: u32,
    keys_only: bool,
    stale: bool,
    c: &ClientArgs,
) -> Result<ExitCode, CliError> {
    let prefix = prefix.unwrap_or_default();
    let end = prefix_end(&prefix);
    let client = c.connect().await?;
    // Page by page (each page fits a frame), up to `limit` items in all.
    // `next`: where the rest starts when `limit` cut the listing short.
    let (mut items, mut revision, mut next) = (Vec::new(), None, Some(prefix));
    while let Some(start) = next.take() {
        let want = limit.saturating_sub(items.len() as u32);
        if want == 0 {
            next = Some(start);
            break;
        }
        let page = client.kv_page(start, end.clone(), want, consistency(stale)).await?;
        revision.get_or_insert(page.revision);
        items.extend(page.items);
        next = page.next;
    }
    if c.json {
        let items = items.into_iter().map(|(key, value)| view::KvItem { key, value }).collect();
        print_json(&view::KvItems { revision: revision.unwrap_or(0), items, next })?;
    } else {
        for (k, v) in &items {
            if keys_only { outln!("{k}") } else { outln!("{k} = {v}") }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `roster watch`: events until ctrl-c, `--count`, or a closed stdout. An outage of the
/// cluster does not end it: the stream resumes after the last revision received once a
/// node answers again (`--outage-timeout-s` bounds the wait).
pub async fn watch(args: WatchArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    // The servers now name the hosts of processes, and tell a resources-only update.
    let status = client.status().await?;
    let after = args.after.unwrap_or(status.revision);
    let processes = client
        .list(ListFilter { kind: Some(MemberKind::Process), ..ListFilter::default() }, Consistency::Linearizable)
        .await?
        .processes;
    let mut known = KnownServers::new(status.servers.into_iter().map(|s| s.entry)).with_processes(processes);
    let mut stream = client.watch(after).await?;
    let stdout_closed = super::stdout_closed::wait();
    tokio::pin!(stdout_closed);
    let outage_limit = args.outage_timeout_s.map(std::time::Duration::from_secs);
    // When the outage began, and the revision the watch resumes after.
    let mut outage_since: Option<(tokio::time::Instant, u64)> = None;
    let mut shown = 0u64;
    while args.count.is_none_or(|c| shown < c) {
        let next = tokio::select! {
            biased;
            () = &mut stdout_closed => return Ok(ExitCode::SUCCESS),
            next = stream.next() => next,
        };
        let event = match next {
            Ok(event) => {
                if let Some((_, from)) = outage_since.take() {
                    eprintln!("watch: resumed after revision {from}");
                }
                event
            }
            Err(e) if outlasts_an_outage(&e) => {
                let (since, _) = match outage_since {
                    Some(outage) => outage,
                    None => {
                        let from = stream.last_revision();
                        eprintln!("watch: {e}; retrying from revision {from} (ctrl-c to stop)");
                        *outage_since.insert((tokio::time::Instant::now(), from))
                    }
                };
                if let Some(limit) = outage_limit.filter(|l| since.elapsed() >= *l) {
                    return Err(CliError::WatchOutage { waited_s: limit.as_secs(), source: e });
                }
                tokio::select! {
                    biased;
                    () = &mut stdout_closed => return Ok(ExitCode::SUCCESS),
                    () = tokio::time::sleep(std::time::Duration::from_millis(WATCH_RETRY_PAUSE_MS)) => {}
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let show = watch_shows(&args, &known, &event);
        known.observe(&event);
        if !show {
            continue;
        }
        if c.json {
            let line = view::EventView::new(&event, |id| known.name(id));
            outln!("{}", serde_json::to_string(&line)?);
        } else {
            outln!("{}", describe::describe(&event, |id| known.name(id)));
        }
        shown += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// Pause between tries to reopen a watch while no node answers (each try itself waits up
/// to the request timeout).
const WATCH_RETRY_PAUSE_MS: u64 = 250;

/// Whether a watch error is of the path to the cluster, which a later try may get past
/// (an outage, an election), as opposed to an answer that will not change (a compacted
/// revision, a refused credential).
fn outlasts_an_outage(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } | ClientError::NoLeader { .. } => true,
        ClientError::Rejected { .. } => false,
        other => other.is_transport(),
    }
}

/// Whether `watch` shows `event`: it passes `--kind` and `--name`, and is not a periodic
/// resource report unless `--resources` asks for those.
fn watch_shows(args: &WatchArgs, known: &KnownServers, event: &roster_kernel::Event) -> bool {
    let (kind, name) = describe::subject(event);
    let kind_matches = match args.kind {
        // The credentials' events and the audit trail are shown when asked for.
        None => !matches!(kind, SubjectKind::Token | SubjectKind::Audit),
        Some(WatchKind::Server) => kind == SubjectKind::Server,
        Some(WatchKind::Process) => kind == SubjectKind::Process,
        Some(WatchKind::Kv) => kind == SubjectKind::Kv,
        Some(WatchKind::Token) => kind == SubjectKind::Token,
        Some(WatchKind::Audit) => kind == SubjectKind::Audit,
    };
    kind_matches
        && args.name.as_deref().is_none_or(|n| n == name)
        && (args.resources || !known.is_resources_only(event))
}

pub async fn member(args: MemberArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    let result = match args.op {
        MemberOp::List => {
            let s = client.status().await?;
            return member_list(&s, c.json);
        }
        MemberOp::Add { id, addr } => {
            roster_real::config::check_addr("addr", &addr)?;
            client.add_node(id, addr).await
        }
        MemberOp::Remove { id } => client.remove_node(id).await,
        MemberOp::Replace { id } => client.replace_node(id).await,
        MemberOp::TransferLeader { to } => {
            let leader = client.transfer_leader(to).await?;
            if c.json {
                print_json(&serde_json::json!({ "ok": true, "leader": leader }))?;
            } else {
                outln!("leader is now node {leader}");
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    result?;
    if c.json {
        print_json(&serde_json::json!({ "ok": true }))?;
    } else {
        outln!("ok");
    }
    Ok(ExitCode::SUCCESS)
}

/// `roster member list`: one line per Raft member, voters first.
fn member_list(s: &ClusterStatus, json: bool) -> Result<ExitCode, CliError> {
    let voters = s.voters.iter().map(|m| (m, "voter"));
    let members: Vec<_> = voters.chain(s.learners.iter().map(|m| (m, "learner"))).collect();
    if json {
        let list: Vec<_> = members
            .iter()
            .map(|((id, addr), role)| serde_json::json!({ "id": id, "addr": addr, "role": role, "leader": s.leader == Some(*id) }))
            .collect();
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{:<5} {:<24} {:<8} LEADER", "ID", "ADDR", "ROLE");
    for ((id, addr), role) in members {
        outln!("{id:<5} {addr:<24} {role:<8} {}", if s.leader == Some(*id) { "yes" } else { "" });
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{prefix_end, unix_ms_text};

    #[test]
    fn a_prefix_ends_before_the_first_key_it_does_not_start() {
        assert_eq!(prefix_end("app/"), Some("app0".to_string()));
        assert_eq!(prefix_end("a"), Some("b".to_string()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".to_string()));
        assert_eq!(prefix_end("\u{D7FF}"), Some("\u{E000}".to_string()));
        for key in ["app/", "app/x", "app/\u{10FFFF}"] {
            assert!(key < prefix_end("app/").unwrap().as_str(), "{key}");
        }
    }

    #[test]
    fn unix_times_print_as_utc_dates() {
        assert_eq!(unix_ms_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(unix_ms_text(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(unix_ms_text(1_796_170_242_299), "2026-12-02 00:10:42 UTC");
    }
}
