//! `coffer`: declarative backup and restore for the MySQL family.

mod bench_archive;
mod commands;
mod home;
mod operator;
mod output;
mod pod;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "coffer",
    version,
    about = "Declarative, scheduled backup and restore for MySQL, MariaDB and Percona XtraDB",
    long_about = "coffer keeps Stash's resource model (Repository, AppBinding, BackupConfiguration, \
RestoreSession, ...) and backs databases up into encrypted, deduplicated restic repositories."
)]
pub struct Cli {
    /// Where coffer keeps its state (default: $COFFER_HOME, else ~/.local/share/coffer)
    #[arg(long, global = true, env = "COFFER_HOME_FLAG", hide_env = true)]
    pub home: Option<PathBuf>,
    /// Namespace of the resources named on the command line
    #[arg(short = 'n', long, global = true, default_value = "default")]
    pub namespace: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Yaml,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or update resources from manifests (files, directories, or - for stdin)
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// List resources of a kind, or show one
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
        /// Every namespace
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show one resource in detail, with its conditions and failure reason
    Describe { kind: String, name: String },
    /// Delete a resource
    Delete { kind: String, name: String },
    /// Run a backup of a BackupConfiguration now
    Backup {
        backup_configuration: String,
        /// Wait for the session to finish; exit 0 only if it Succeeded
        #[arg(long)]
        wait: bool,
    },
    /// Apply a RestoreSession manifest and run it
    Restore {
        #[arg(short = 'f', long = "filename", required = true)]
        file: String,
        /// Wait for the session to finish; exit 0 only if it Succeeded
        #[arg(long)]
        wait: bool,
    },
    /// Wait for a session to finish (running it here if no server is running); exit 0 only if it Succeeded
    Wait {
        kind: String,
        name: String,
        /// Give up after this long (e.g. 30m)
        #[arg(long, default_value = "24h")]
        timeout: String,
    },
    /// List the snapshots in a Repository, newest first
    Snapshots {
        repository: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Remove stale locks from a Repository (all locks with --remove-all)
    Unlock {
        repository: String,
        #[arg(long)]
        remove_all: bool,
    },
    /// Check a Repository: its structure, and with --read-data its data (exit 1 if damaged)
    ///
    /// Damaged packs are named with the snapshots that depend on them and taken out of the
    /// repository (their intact blobs salvaged), so that the next backup writes the damaged
    /// data again. The outcome is recorded in the Repository's status.
    Check {
        repository: String,
        /// Read every pack's data back and verify each blob's hash
        #[arg(long)]
        read_data: bool,
        /// Read only one slice of the packs: N/M (1 <= N <= M) — running 1/M..M/M reads every
        /// pack once; `daily/M` picks today's slice, so a daily run covers all in M days
        #[arg(long, value_name = "N/M")]
        subset: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Verify a BackupConfiguration's newest snapshot now (exit 1 if the verification fails)
    ///
    /// The snapshot is restored into a throwaway server started on this machine (a private
    /// data directory and loopback port, removed afterwards), its tables are checked and the
    /// queries of spec.verification run; the outcome is recorded on the BackupConfiguration's
    /// status (lastVerification) and pushed as metrics.
    Verify {
        backup_configuration: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Stop scheduling new sessions of a BackupConfiguration
    Pause { backup_configuration: String },
    /// Resume scheduling a paused BackupConfiguration
    Resume { backup_configuration: String },
    /// Print a session's own log
    Logs {
        /// backupsession or restoresession (optional: found by name)
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
    /// Run a BinlogArchive here until SIGINT/SIGTERM (the open segment is stored first)
    Archive { binlog_archive: String },
    /// Run the local platform: schedules, sessions, binlog archives, metrics
    Server {
        /// Pushgateway to push metrics to at the end of every session (e.g. http://127.0.0.1:9091)
        #[arg(long)]
        pushgateway: Option<String>,
        /// Loopback address for /metrics and /healthz (and, by default, the dashboard)
        #[arg(long)]
        metrics_address: Option<String>,
        /// Address of the read-only web dashboard (default: on the metrics address when that
        /// is loopback; `off` turns it off)
        #[arg(long)]
        dashboard_address: Option<String>,
        /// How long running sessions may take to finish after SIGTERM (e.g. 60s)
        #[arg(long)]
        shutdown_grace: Option<String>,
        /// YAML file with pushgateway, metricsAddress, dashboardAddress, shutdownGrace (flags
        /// win)
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The Kubernetes operator: `crds` prints the CRDs, `run` runs the controllers
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCommand,
    },
    /// Run one session (started by the server or by `backup --wait`)
    #[command(hide = true)]
    Agent { kind: String, name: String },
    /// Create one BackupSession of a BackupConfiguration (what the trigger CronJob runs)
    CreateBackupsession { backup_configuration: String },
    /// Simulate months of binlog archive flushes in a new local repository and time listing
    /// and restore planning (scripts/bench-archive-layout.sh)
    #[command(hide = true)]
    BenchArchiveLayout {
        /// An empty directory for the repository
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        days: u64,
        #[arg(long, default_value_t = 5)]
        flush_seconds: u64,
    },
}

fn init_tracing() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,rustic_core=warn,opendal=warn,hyper=warn,reqwest=warn")
    });
    use std::io::IsTerminal;
    fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact()
        .init();
}

/// glibc gives every thread that allocates its own arena (up to eight per core) and keeps
/// what each arena once held: a native backup, which starts a short-lived thread per chunk
/// of a table, grew its resident memory with the size of the database. Two arenas keep it
/// flat at no measurable cost in speed.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() {
    cap_malloc_arenas();
    let cli = Cli::parse();
    init_tracing();
    // The Kubernetes commands never open the local store (a pod has none).
    let result = match cli.command {
        Command::Operator { command } => operator::operator(command),
        Command::CreateBackupsession {
            backup_configuration,
        } => operator::create_backupsession(cli.home, &cli.namespace, &backup_configuration),
        Command::BenchArchiveLayout {
            dir,
            days,
            flush_seconds,
        } => bench_archive::run(&dir, days, flush_seconds),
        _ => commands::run(cli),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
