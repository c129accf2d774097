//! Throwaway MariaDB Galera clusters on loopback.
//!
//! [`GaleraCluster::start`] bootstraps node 1 from a fresh `mariadb-install-db`
//! datadir and joins the other nodes one after the other, each with an **empty**
//! datadir that it gets by a real `mariabackup` State Snapshot Transfer (SST) — the
//! same path a backup taken through `garbd` uses. [`start_restored`] bootstraps a new
//! cluster from a prepared `mariabackup` datadir, and
//! [`GaleraCluster::join_empty_node`] lets another empty node join it by SST.
//!
//! Layout and conventions (shared with [`MariaDb`](crate::MariaDb)):
//!
//! * Everything lives in one temporary directory (`coffer-galera-*`): one
//!   sub-directory per node with its option file (`my.cnf`), datadir, socket, error
//!   log, pid file and private tmpdir, plus `sst_log_archive/` for the SST scripts'
//!   archived logs. It is removed on `Drop` unless `COFFER_TESTKIT_KEEP=1`.
//! * Every port is picked with [`free_port`](crate::free_port) and bound to
//!   `127.0.0.1`: SQL, Galera group communication (`gmcast.listen_addr`,
//!   `wsrep_node_address`), IST (`ist.recv_addr`) and SST
//!   (`wsrep_sst_receive_address`). A node whose port was taken in the meantime is
//!   started again on new ports.
//! * `mariadbd` always runs with `--defaults-file=<node>/my.cnf` (so nothing from
//!   `/etc/mysql` is read): the SST scripts and the `mariadb-backup` they run read the
//!   same file. It has no `[client]` group on purpose — the donor's SST script passes
//!   the SST password in `MYSQL_PWD`, which a `[client] password` would override. Use
//!   [`GaleraNode::client_defaults_file`] for the `mariadb` CLI.
//! * Each `mariadbd` runs in its own process group with a parent-death signal (see
//!   `process.rs`); stopping a node signals its whole group. Its SST helpers do not
//!   all stay in that group (the joiner's `timeout 300 socat` makes its own) and get
//!   no parent-death signal, so every process of a cluster carries
//!   `COFFER_TESTKIT_GALERA=<tag>/<node>` in its environment: `stop` SIGKILLs what is
//!   left with that tag, and a small watchdog (`sh`, holding a pipe from the test
//!   process) does the same when the test process dies without running `Drop`.
//! * Run as root, the servers run as root (`user=root`), SST scripts included; no
//!   `chown` is needed. Otherwise they run as the current user.
//!
//! Accounts: `root@localhost` and `root@'%'` with a random password
//! ([`GaleraCluster::root_password`]), and the SST user `<sst_user>@localhost` with
//! `RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR` (what `mariadb-backup --galera-info`
//! needs). Both are created on node 1 before any other node joins.
//!
//! Needs `mariadbd`, `mariadb-install-db`, the Galera 4 provider
//! (`/usr/lib/galera/libgalera_smm.so`, or set `COFFER_WSREP_PROVIDER`), and for SST
//! `mariadb-backup`/`mariabackup`, `mbstream` and `socat` on `PATH`.
//!
//! ```ignore
//! use coffer_testkit::{GaleraCluster, GaleraOptions};
//!
//! let cluster = GaleraCluster::start(GaleraOptions::default())?; // 3 nodes, ~30 s
//! cluster.node(0).exec("CREATE DATABASE shop")?;
//! assert_eq!(cluster.node(2).state()?, "Synced");
//! ```

use crate::mariadb::{keep_dirs, query_strings, sql_string};
use crate::process;
use anyhow::{anyhow, bail, Context, Result};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const HOST: &str = "127.0.0.1";
/// Environment variable that marks every process of a cluster (inherited by all
/// descendants, whatever process group or session they move to).
const TAG_ENV: &str = "COFFER_TESTKIT_GALERA";
/// A bootstrap node only runs crash recovery (a restored datadir) before it is Synced.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(180);
/// A joiner waits for a whole SST (the donor's script alone sleeps 10 s).
const JOIN_TIMEOUT: Duration = Duration::from_secs(300);
/// After every node started: the last view change should reach every node at once.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(60);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(180);
const PORT_ATTEMPTS: usize = 3;
/// gmcast's handshake has a fixed 32-byte field for `wsrep_cluster_name`.
const MAX_GROUP_LEN: usize = 32;
const LOG_TAIL_LINES: usize = 40;
const OTHER_LOG_TAIL_LINES: usize = 15;
const GCACHE_SIZE: &str = "32M";
const PROVIDER_PATHS: [&str; 4] = [
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/galera-4/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib64/galera/libgalera_smm.so",
];

/// Options for [`GaleraCluster::start`].
#[derive(Clone, Debug)]
pub struct GaleraOptions {
    /// Number of nodes (at least 1). Default 3.
    pub nodes: usize,
    /// `wsrep_cluster_name`, which `garbd --group` must match. Default
    /// `coffer_test_<random hex>` (24 characters). Letters, digits, `_`, `-` and `.`
    /// only, at most 32 bytes (Galera's limit: a longer name lets the first node
    /// start but makes every joiner's handshake fail).
    pub group: String,
    /// The SST user (`wsrep_sst_auth` user, created `@'localhost'`). Default `sstuser`.
    pub sst_user: String,
    /// The SST user's password. Default: random.
    pub sst_password: String,
    /// Extra lines for every node's `[sst]` group, e.g. `encrypt = 3` with `tcert`, `tkey`
    /// and `tca` paths for an encrypted SST. Default: none.
    pub sst_cnf: String,
    /// Every node writes a binlog with MariaDB GTIDs a replica (or a PITR archive) can
    /// follow across nodes (pitr.md §5): `log_bin`, `log_slave_updates`,
    /// `wsrep_gtid_mode=ON`, `wsrep_gtid_domain_id=100`, node N's `server_id` 20+N and
    /// `gtid_domain_id` N. Default off.
    pub binlog: bool,
}

impl Default for GaleraOptions {
    fn default() -> Self {
        GaleraOptions {
            nodes: 3,
            group: format!("coffer_test_{}", crate::random_hex(6)),
            sst_user: "sstuser".to_string(),
            sst_password: crate::random_hex(16),
            sst_cnf: String::new(),
            binlog: false,
        }
    }
}

/// A Galera cluster of [`GaleraNode`]s on loopback, in a temporary directory of its
/// own. Stopped (node N-1 first, node 0 last, so node 0 is `safe_to_bootstrap: 1`)
/// and its directory removed on `Drop`.
pub struct GaleraCluster {
    group: String,
    root_password: String,
    sst_user: String,
    sst_password: String,
    /// Extra `[sst]` lines (see [`GaleraOptions::sst_cnf`]).
    sst_cnf: String,
    /// See [`GaleraOptions::binlog`].
    binlog: bool,
    provider: PathBuf,
    mariadbd: PathBuf,
    base: PathBuf,
    nodes: Vec<GaleraNode>,
    /// Random; every process of this cluster has `COFFER_TESTKIT_GALERA=<tag>/<node>`
    /// in its environment (see [`GaleraCluster::process_tag`]).
    tag: String,
    /// Sweeps this cluster's processes when the test process dies (see `Watchdog`).
    watchdog: Option<Watchdog>,
    // Last, so that the directory outlives the servers in drop order.
    dir: Option<tempfile::TempDir>,
}

/// One node of a [`GaleraCluster`]: a `mariadbd` with the wsrep provider loaded.
pub struct GaleraNode {
    name: String,
    ports: NodePorts,
    password: String,
    dir: PathBuf,
    datadir: PathBuf,
    socket: PathBuf,
    error_log: PathBuf,
    stdout_log: PathBuf,
    defaults_file: PathBuf,
    client_defaults_file: PathBuf,
    cmdline: String,
    child: Mutex<Option<Child>>,
}

#[derive(Clone, Copy, Debug)]
struct NodePorts {
    sql: u16,
    gcomm: u16,
    ist: u16,
    sst: u16,
}

impl NodePorts {
    fn fresh() -> NodePorts {
        NodePorts {
            sql: crate::free_port(),
            gcomm: crate::free_port(),
            ist: crate::free_port(),
            sst: crate::free_port(),
        }
    }
}

/// How a node enters the cluster.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// `--wsrep-new-cluster` on a datadir fresh from mariadb-install-db (root has no
    /// password yet; the accounts are set up after it is Synced).
    BootstrapFresh,
    /// `--wsrep-new-cluster` on an existing datadir whose root password is known.
    BootstrapExisting,
    /// Empty datadir, filled by SST from a member.
    Join,
}

impl GaleraCluster {
    /// Bootstraps node 0, joins the other nodes one at a time (each by mariabackup
    /// SST, about 14 s each) and waits until every node is `Synced` in a Primary
    /// component of `opts.nodes` members.
    pub fn start(opts: GaleraOptions) -> Result<GaleraCluster> {
        if opts.nodes == 0 {
            bail!("a Galera cluster needs at least one node");
        }
        let mut cluster = GaleraCluster::new(
            &opts.group,
            crate::random_hex(16),
            &opts.sst_user,
            &opts.sst_password,
        )?;
        cluster.sst_cnf = opts.sst_cnf.clone();
        cluster.binlog = opts.binlog;
        let node = cluster.new_node(None)?;
        install_db(&node.datadir, &node.dir.join("install.log"), &cluster.tag)?;
        cluster.launch(node, Role::BootstrapFresh)?;
        for _ in 1..opts.nodes {
            cluster.launch_joiner()?;
        }
        cluster.wait_synced(SETTLE_TIMEOUT)?;
        Ok(cluster)
    }

    /// Adds a node with an empty datadir that gets a mariabackup SST from a member
    /// (node 0 unless Galera picks another Synced node), and waits until it is
    /// `Synced` and every node sees the new cluster size. A node that fails to join
    /// is stopped and not added (its directory is renamed `node<N>.failed-<k>`); the
    /// error has its log tail, the members' and the donor's `mariadb-backup` log
    /// (e.g. "Access denied for user 'sstuser'@'localhost'").
    pub fn join_empty_node(&mut self) -> Result<()> {
        self.launch_joiner()?;
        self.wait_synced(SETTLE_TIMEOUT)
    }

    /// `wsrep_cluster_name`.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// `gcomm://127.0.0.1:<gcomm port>,...` over every node, for `garbd --address`.
    pub fn address(&self) -> String {
        gcomm_address(self.nodes.iter().map(|n| n.ports.gcomm))
    }

    /// Node `i` (0-based; its [`name`](GaleraNode::name) is `node{i+1}`).
    pub fn node(&self, i: usize) -> &GaleraNode {
        &self.nodes[i]
    }

    pub fn nodes(&self) -> &[GaleraNode] {
        &self.nodes
    }

    /// Password of `root@localhost` and `root@'%'` on every node.
    pub fn root_password(&self) -> &str {
        &self.root_password
    }

    /// The SST user in every node's `wsrep_sst_auth`.
    pub fn sst_user(&self) -> &str {
        &self.sst_user
    }

    /// The SST password in every node's `wsrep_sst_auth`.
    pub fn sst_password(&self) -> &str {
        &self.sst_password
    }

    /// The temporary directory with one sub-directory per node.
    pub fn dir(&self) -> &Path {
        &self.base
    }

    /// `SET GLOBAL wsrep_sst_auth = 'user:password'` on node `i` (for fault tests:
    /// a donor with wrong SST credentials). Not persisted in its option file.
    pub fn set_sst_auth(&self, i: usize, user_pass: &str) -> Result<()> {
        self.node(i).exec(&format!(
            "SET GLOBAL wsrep_sst_auth = {}",
            sql_string(user_pass)
        ))
    }

    /// Waits until every node is running, `Synced`, in a Primary component and
    /// reports `wsrep_cluster_size` equal to the number of nodes.
    pub fn wait_synced(&self, timeout: Duration) -> Result<()> {
        let expected = self.nodes.len();
        let start = Instant::now();
        loop {
            let mut report = String::new();
            let mut first_bad: Option<&GaleraNode> = None;
            for node in &self.nodes {
                let line = match node.status() {
                    Ok(st) if st.is_synced(expected) => continue,
                    Ok(st) => st.to_string(),
                    Err(e) => format!("{e:#}"),
                };
                if let Some(status) = node.exit_status() {
                    return Err(node.failure(anyhow!("{} exited ({status})", node.what())));
                }
                let _ = writeln!(report, "  {}: {line}", node.name);
                first_bad.get_or_insert(node);
            }
            let Some(bad) = first_bad else {
                return Ok(());
            };
            if start.elapsed() > timeout {
                return Err(bad.failure(anyhow!(
                    "Galera cluster {} not Synced with {expected} nodes after {}s:\n{report}",
                    self.group,
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops every node, node N-1 first and node 0 last (clean shutdown: SIGTERM to
    /// its process group, SIGKILL after 60 s). No-op for stopped nodes; `Drop` calls it.
    pub fn stop(&mut self) {
        for node in self.nodes.iter().rev() {
            node.stop();
        }
        // SST helpers outside the servers' process groups (`timeout socat ...` makes
        // its own group), and anything a server left behind.
        sweep(&self.tag, None);
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.dismiss();
        }
    }

    /// Every process of this cluster — servers, SST scripts, `socat`,
    /// `mariadb-backup`, `mariadb-install-db` — has `COFFER_TESTKIT_GALERA=<tag>/<node
    /// name>` in its environment (`<tag>/install` for mariadb-install-db); `stop` and
    /// the watchdog find leftovers by it.
    pub fn process_tag(&self) -> &str {
        &self.tag
    }

    fn new(
        group: &str,
        root_password: String,
        sst_user: &str,
        sst_password: &str,
    ) -> Result<GaleraCluster> {
        check_cnf_value("group", group)?;
        if group.is_empty()
            || !group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            bail!("Galera group name {group:?}: use letters, digits, '_', '-' and '.' only");
        }
        if group.len() > MAX_GROUP_LEN {
            // gmcast carries the name in a fixed 32-byte field: the bootstrap node
            // starts, but every joiner's handshake then fails without saying why.
            bail!(
                "Galera group name {group:?} is {} bytes; Galera allows at most {MAX_GROUP_LEN}",
                group.len()
            );
        }
        if sst_user.is_empty() || sst_user.contains(':') {
            bail!("SST user {sst_user:?} must be non-empty and contain no ':'");
        }
        check_cnf_value("SST user", sst_user)?;
        check_cnf_value("SST password", sst_password)?;
        let provider = wsrep_provider()?;
        let mariadbd = mariadbd()?;
        let missing: Vec<&str> = [
            &["mariadb-backup", "mariabackup"][..],
            &["mbstream"],
            &["socat"],
        ]
        .iter()
        .filter(|names| !names.iter().any(|n| on_path(n)))
        .map(|names| names[0])
        .collect();
        if !missing.is_empty() {
            bail!(
                "Galera mariabackup SST needs {} on PATH (apt-get install mariadb-backup socat)",
                missing.join(", ")
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("coffer-galera-")
            .tempdir()
            .context("create a temporary directory for a Galera cluster")?;
        let base = dir.path().to_path_buf();
        let tag = crate::random_hex(8);
        let archive = base.join("sst_log_archive");
        std::fs::create_dir_all(&archive)
            .with_context(|| format!("create {}", archive.display()))?;
        Ok(GaleraCluster {
            group: group.to_string(),
            root_password,
            sst_user: sst_user.to_string(),
            sst_password: sst_password.to_string(),
            sst_cnf: String::new(),
            binlog: false,
            provider,
            mariadbd,
            base,
            nodes: Vec::new(),
            watchdog: Some(Watchdog::start(&tag)?),
            tag,
            dir: Some(dir),
        })
    }

    /// A node directory for the next node; `datadir` defaults to `<node dir>/data`.
    fn new_node(&self, datadir: Option<&Path>) -> Result<GaleraNode> {
        let name = format!("node{}", self.nodes.len() + 1);
        let dir = self.base.join(&name);
        if dir.exists() {
            // Left by a node that failed to join: keep it for inspection.
            let kept = (1..)
                .map(|n| self.base.join(format!("{name}.failed-{n}")))
                .find(|p| !p.exists())
                .expect("an unused name");
            std::fs::rename(&dir, &kept)
                .with_context(|| format!("rename {} to {}", dir.display(), kept.display()))?;
        }
        let tmpdir = dir.join("tmp");
        std::fs::create_dir_all(&tmpdir).with_context(|| format!("create {}", tmpdir.display()))?;
        let socket = dir.join("mysqld.sock");
        if socket.as_os_str().len() > 100 {
            bail!(
                "Galera socket path {} is too long for a Unix socket; set TMPDIR to a shorter directory",
                socket.display()
            );
        }
        Ok(GaleraNode {
            ports: NodePorts::fresh(),
            password: self.root_password.clone(),
            datadir: datadir.map_or_else(|| dir.join("data"), Path::to_path_buf),
            socket,
            error_log: dir.join("error.log"),
            stdout_log: dir.join("stdout.log"),
            defaults_file: dir.join("my.cnf"),
            client_defaults_file: dir.join("client.cnf"),
            cmdline: String::new(),
            child: Mutex::new(None),
            name,
            dir,
        })
    }

    fn launch_joiner(&mut self) -> Result<()> {
        if self.nodes.is_empty() || self.watchdog.is_none() {
            bail!("no node to join: the cluster was stopped");
        }
        self.check_sst_user()?;
        let node = self.new_node(None)?;
        self.launch(node, Role::Join)
    }

    /// The donor needs the SST user; say so plainly instead of a failed SST.
    fn check_sst_user(&self) -> Result<()> {
        let rows = self.nodes[0].query_strings(&format!(
            "SELECT COUNT(*) FROM mysql.global_priv WHERE User = {} AND Host = 'localhost'",
            sql_string(&self.sst_user)
        ))?;
        if rows.first().and_then(|r| r.first()).cloned().flatten() != Some("1".into()) {
            bail!(
                "SST user '{}'@'localhost' does not exist on {}: a joiner's SST would fail",
                self.sst_user,
                self.nodes[0].name
            );
        }
        Ok(())
    }

    /// Writes the node's option file, starts it and waits until it is Synced (on
    /// fresh ports when a port was taken meanwhile), then adds it to the cluster.
    fn launch(&mut self, mut node: GaleraNode, role: Role) -> Result<()> {
        let bootstrap = role != Role::Join;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > 1 {
                node.ports = NodePorts::fresh();
                rotate_log(&node.error_log, attempt - 1);
            }
            if role == Role::Join {
                // A joiner starts empty; a failed attempt may have left part of an SST.
                reset_dir(&node.datadir)?;
            } else {
                allow_bootstrap(&node.datadir)?;
            }
            let peers: Vec<u16> = if bootstrap {
                Vec::new()
            } else {
                self.nodes.iter().map(|n| n.ports.gcomm).collect()
            };
            let address = gcomm_address(peers.into_iter().chain([node.ports.gcomm]));
            std::fs::write(&node.defaults_file, self.server_cnf(&node, &address))
                .with_context(|| format!("write {}", node.defaults_file.display()))?;
            node.write_client_defaults()?;

            match self.spawn_and_wait(&mut node, role) {
                Ok(()) => break,
                Err(e) => {
                    node.kill();
                    sweep(&self.tag, Some(&node.name));
                    let in_use =
                        crate::file_tail(&node.error_log, 200).contains("Address already in use");
                    if in_use && attempt < PORT_ATTEMPTS {
                        continue;
                    }
                    let mut e = node.failure(e);
                    if role == Role::Join {
                        e = self.with_member_logs(e);
                    }
                    return Err(e);
                }
            }
        }
        if role == Role::BootstrapFresh {
            self.secure_accounts(&node)
                .map_err(|e| node.failure(e.context("set up the root and SST accounts")))?;
        }
        // Prove the path every test uses: root over TCP.
        node.conn().map_err(|e| {
            e.context(format!(
                "{} is Synced, but root cannot log in over TCP",
                node.name
            ))
        })?;
        self.nodes.push(node);
        Ok(())
    }

    fn spawn_and_wait(&self, node: &mut GaleraNode, role: Role) -> Result<()> {
        let mut cmd = Command::new(&self.mariadbd);
        cmd.env(TAG_ENV, format!("{}/{}", self.tag, node.name));
        // --defaults-file must come first; the SST scripts get it passed on.
        cmd.arg(path_arg("--defaults-file=", &node.defaults_file));
        if role != Role::Join {
            cmd.arg("--wsrep-new-cluster");
        }
        node.cmdline = format!("{cmd:?}");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.stdout_log)
            .with_context(|| format!("open {}", node.stdout_log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = process::spawn(cmd, "mariadbd (Galera)")?;
        *node.lock_child() = Some(child);

        let expected = self.nodes.len() + 1;
        let what = node.what();
        let (timeout, via_socket, fatal_denied) = match role {
            Role::BootstrapFresh => (BOOTSTRAP_TIMEOUT, true, false),
            Role::BootstrapExisting => (BOOTSTRAP_TIMEOUT, false, true),
            // The joiner's accounts only arrive with the SST.
            Role::Join => (JOIN_TIMEOUT, false, false),
        };
        let start = Instant::now();
        loop {
            let probe = if via_socket {
                node.socket_conn(None)
            } else {
                node.probe_conn()
            };
            let last = match probe.and_then(|mut c| wsrep_status(&mut c)) {
                Ok(st) if st.is_synced(expected) => return Ok(()),
                Ok(st) => anyhow!("{st}"),
                Err(e) if fatal_denied && is_access_denied(&e) => {
                    return Err(e.context(format!(
                        "{what}: root cannot log in with the given password \
                         (the datadir's mysql schema has another one)"
                    )));
                }
                Err(e) => e,
            };
            if let Some(status) = node.exit_status() {
                bail!("{what} exited during startup ({status})");
            }
            if start.elapsed() > timeout {
                bail!(
                    "{what} was not Synced in a cluster of {expected} after {}s; last status: {last:#}",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// On a fresh bootstrap node (root@localhost without password, over the socket):
    /// the harness's root accounts and the SST user. Galera replicates both.
    fn secure_accounts(&self, node: &GaleraNode) -> Result<()> {
        let mut conn = node.socket_conn(None)?;
        let extra: Vec<(String, String)> = conn.query(
            "SELECT User, Host FROM mysql.user \
             WHERE (User = 'root' AND Host <> 'localhost') OR User = ''",
        )?;
        for (user, host) in extra {
            conn.query_drop(format!(
                "DROP USER {}@{}",
                sql_string(&user),
                sql_string(&host)
            ))?;
        }
        let pw = sql_string(&self.root_password);
        let sst = format!("{}@'localhost'", sql_string(&self.sst_user));
        conn.query_drop(format!(
            "ALTER USER root@localhost IDENTIFIED BY {pw}; \
             CREATE USER root@'%' IDENTIFIED BY {pw}; \
             GRANT ALL PRIVILEGES ON *.* TO root@'%' WITH GRANT OPTION; \
             GRANT PROXY ON ''@'%' TO root@'%' WITH GRANT OPTION; \
             CREATE USER {sst} IDENTIFIED BY {}; \
             GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO {sst}; \
             FLUSH PRIVILEGES",
            sql_string(&self.sst_password)
        ))?;
        Ok(())
    }

    fn server_cnf(&self, node: &GaleraNode, address: &str) -> String {
        let p = node.ports;
        let mut cnf = format!(
            "# coffer-testkit: {name} of Galera cluster {group}\n\
             [mysqld]\n\
             datadir = {datadir}\n\
             socket = {socket}\n\
             port = {sql}\n\
             bind-address = {HOST}\n\
             pid-file = {pid}\n\
             log-error = {log}\n\
             tmpdir = {tmp}\n\
             skip-name-resolve\n\
             max-allowed-packet = 256M\n\
             innodb_buffer_pool_size = 64M\n\
             innodb_log_file_size = 48M\n\
             innodb_flush_log_at_trx_commit = 2\n\
             binlog_format = ROW\n\
             default_storage_engine = InnoDB\n\
             innodb_autoinc_lock_mode = 2\n",
            name = node.name,
            group = self.group,
            datadir = node.datadir.display(),
            socket = node.socket.display(),
            sql = p.sql,
            pid = node.dir.join("mysqld.pid").display(),
            log = node.error_log.display(),
            tmp = node.dir.join("tmp").display(),
        );
        if is_root() {
            cnf.push_str("user = root\n");
        }
        if self.binlog {
            let n: u32 = node
                .name
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap_or(0);
            let _ = write!(
                cnf,
                "log_bin = mysql-bin\n\
                 log_slave_updates = ON\n\
                 server_id = {}\n\
                 gtid_domain_id = {n}\n\
                 wsrep_gtid_mode = ON\n\
                 wsrep_gtid_domain_id = 100\n",
                20 + n
            );
        }
        let _ = write!(
            cnf,
            "\n[galera]\n\
             wsrep_on = ON\n\
             wsrep_provider = {provider}\n\
             wsrep_cluster_name = {group}\n\
             wsrep_cluster_address = {address}\n\
             wsrep_node_name = {name}\n\
             wsrep_node_address = {HOST}:{g}\n\
             wsrep_node_incoming_address = {HOST}:{sql}\n\
             wsrep_provider_options = \"gmcast.listen_addr=tcp://{HOST}:{g};ist.recv_addr={HOST}:{i};gcache.size={GCACHE_SIZE}\"\n\
             wsrep_sst_method = mariabackup\n\
             wsrep_sst_auth = \"{user}:{pass}\"\n\
             wsrep_sst_receive_address = {HOST}:{s}\n\
             \n[sst]\n\
             sst-log-archive-dir = {archive}\n",
            provider = self.provider.display(),
            group = self.group,
            name = node.name,
            g = p.gcomm,
            sql = p.sql,
            i = p.ist,
            s = p.sst,
            user = self.sst_user,
            pass = self.sst_password,
            archive = self.base.join("sst_log_archive").display(),
        );
        cnf.push_str(&self.sst_cnf);
        if !cnf.ends_with('\n') {
            cnf.push('\n');
        }
        cnf
    }

    /// Appends the other members' log tails (the donor's among them) and any donor
    /// `mariabackup.backup.log` to a joiner's error.
    fn with_member_logs(&self, e: anyhow::Error) -> anyhow::Error {
        let mut text = format!("{e:#}");
        for member in &self.nodes {
            let _ = write!(
                text,
                "\n--- {} (member {}, tail) ---\n{}",
                member.error_log.display(),
                member.name,
                crate::file_tail(&member.error_log, OTHER_LOG_TAIL_LINES)
            );
            let backup_log = member.datadir.join("mariabackup.backup.log");
            if backup_log.exists() {
                let _ = write!(
                    text,
                    "\n--- {} (donor's mariadb-backup, tail) ---\n{}",
                    backup_log.display(),
                    crate::file_tail(&backup_log, OTHER_LOG_TAIL_LINES)
                );
            }
        }
        anyhow!(text)
    }
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "--- coffer-testkit: Galera {} {} ({HOST}:{}) error log (tail) ---\n{}\n---",
                    self.group,
                    node.name,
                    node.ports.sql,
                    node.log_tail()
                );
            }
        }
        self.stop();
        if keep_dirs() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "coffer-testkit: kept Galera cluster directory {}",
                    dir.keep().display()
                );
            }
        }
    }
}

impl std::fmt::Debug for GaleraCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaleraCluster")
            .field("group", &self.group)
            .field("dir", &self.base)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// Starts a single Galera node on an existing, prepared data directory (a restored
/// `mariadb-backup --prepare`d backup), bootstrapping a new cluster from it
/// (`--wsrep-new-cluster`) on fresh ports with the given group name.
///
/// The datadir is used in place and left in place on `Drop` (only the cluster's own
/// directory with option files, logs and sockets is removed). Its `mysql` schema
/// decides the accounts, so pass the source's root password (`root@'%'` must exist,
/// as on every harness cluster) and SST credentials (needed on this node when
/// [`GaleraCluster::join_empty_node`] adds a node). A `grastate.dat` with
/// `safe_to_bootstrap: 0` is switched to 1.
pub fn start_restored(
    datadir: &Path,
    group: &str,
    root_password: &str,
    sst_user: &str,
    sst_password: &str,
) -> Result<GaleraCluster> {
    let datadir = std::path::absolute(datadir)
        .with_context(|| format!("absolute path of {}", datadir.display()))?;
    if !datadir.join("mysql").is_dir() {
        bail!(
            "{} is not a prepared data directory (no mysql/ schema directory)",
            datadir.display()
        );
    }
    check_cnf_value("datadir", &datadir.to_string_lossy())?;
    let mut cluster = GaleraCluster::new(group, root_password.to_string(), sst_user, sst_password)?;
    let node = cluster.new_node(Some(&datadir))?;
    cluster.launch(node, Role::BootstrapExisting)?;
    Ok(cluster)
}

impl GaleraNode {
    /// `wsrep_node_name`: `node1`, `node2`, ... (what `garbd --donor` takes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SQL port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.ports.sql
    }

    /// Galera group-communication port (`gmcast.listen_addr`, `wsrep_node_address`).
    pub fn gcomm_port(&self) -> u16 {
        self.ports.gcomm
    }

    /// IST receive port (`ist.recv_addr`).
    pub fn ist_port(&self) -> u16 {
        self.ports.ist
    }

    /// SST receive port (`wsrep_sst_receive_address`).
    pub fn sst_port(&self) -> u16 {
        self.ports.sst
    }

    /// Connection options for root over TCP (adjust and pass to `mysql::Conn::new`).
    pub fn opts(&self) -> OptsBuilder {
        OptsBuilder::new()
            .ip_or_hostname(Some(HOST))
            .tcp_port(self.ports.sql)
            .user(Some("root"))
            .pass(Some(self.password.clone()))
            // Otherwise the mysql crate switches loopback TCP to the server's socket.
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(10)))
    }

    /// A new connection as root over TCP.
    pub fn conn(&self) -> Result<Conn> {
        Conn::new(self.opts()).map_err(|e| {
            anyhow!(
                "connect to Galera {} at {HOST}:{} as root: {e}\n--- {} (tail) ---\n{}",
                self.name,
                self.ports.sql,
                self.error_log.display(),
                self.log_tail()
            )
        })
    }

    /// Runs SQL (several `;`-separated statements are fine) as root on a new
    /// connection. An error in any statement of the batch is reported.
    pub fn exec(&self, sql: &str) -> Result<()> {
        let mut conn = self.conn()?;
        let run = |conn: &mut Conn| -> mysql::Result<()> {
            let mut result = conn.query_iter(sql)?;
            while let Some(set) = result.iter() {
                for row in set {
                    row?;
                }
            }
            Ok(())
        };
        run(&mut conn)
            .with_context(|| format!("SQL failed on Galera {}: {}", self.name, abbreviate(sql)))
    }

    /// Runs a query as root and returns every row of every result set as text
    /// (`None` for NULL).
    pub fn query_strings(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut conn = self.conn()?;
        query_strings(&mut conn, sql)
            .with_context(|| format!("SQL failed on Galera {}: {}", self.name, abbreviate(sql)))
    }

    /// `wsrep_local_state_comment` (`Synced`, `Donor/Desynced`, `Joined`, ...).
    pub fn state(&self) -> Result<String> {
        let mut conn = self.conn()?;
        Ok(wsrep_status(&mut conn)?.state)
    }

    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The server's option file: `mariadbd` runs with `--defaults-file=` this, and
    /// the SST scripts and their `mariadb-backup` read it. Pass it as
    /// `--defaults-file` to `mariadb-backup --backup` on this node. (No `[client]`
    /// group: see [`client_defaults_file`](Self::client_defaults_file).)
    pub fn defaults_file(&self) -> &Path {
        &self.defaults_file
    }

    /// A `[client]` option file (root, password, 127.0.0.1, port, protocol=TCP) for
    /// the `mariadb`/`mariadb-dump` CLIs: pass it as `--defaults-extra-file=PATH`.
    pub fn client_defaults_file(&self) -> &Path {
        &self.client_defaults_file
    }

    /// The server's Unix socket (outside the datadir).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn error_log(&self) -> &Path {
        &self.error_log
    }

    /// The node's directory (option files, logs, socket, tmpdir; datadir unless
    /// restored from elsewhere).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Process id of the node's `mariadbd` (which leads its own process group), if
    /// it was started and not stopped.
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(|c| c.id())
    }

    /// Whether the node's `mariadbd` is running.
    pub fn is_running(&self) -> bool {
        self.exit_status().is_none() && self.pid().is_some()
    }

    /// The last ~40 lines of the error log (the SST scripts log there too).
    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.error_log, LOG_TAIL_LINES)
    }

    fn what(&self) -> String {
        format!(
            "Galera {} (mariadbd on {HOST}:{})",
            self.name, self.ports.sql
        )
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exit status if the process was started and has exited.
    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.lock_child()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn stop(&self) {
        if let Some(mut child) = self.lock_child().take() {
            process::terminate(&mut child, STOP_GRACE);
        }
    }

    /// SIGKILL, for crash and failover tests. No-op when stopped.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock_child().take() {
            process::kill(&mut child);
        }
    }

    /// Root over the Unix socket (`password` None: install-db's passwordless root).
    fn socket_conn(&self, password: Option<&str>) -> Result<Conn> {
        let opts = OptsBuilder::new()
            .socket(Some(self.socket.to_string_lossy().into_owned()))
            .user(Some("root"))
            .pass(password)
            .read_timeout(Some(Duration::from_secs(10)));
        Conn::new(opts).map_err(|e| anyhow!(e).context("connect as root over the Unix socket"))
    }

    /// Root over TCP with short timeouts, for readiness probes.
    fn probe_conn(&self) -> Result<Conn> {
        let opts = self
            .opts()
            .tcp_connect_timeout(Some(Duration::from_secs(2)))
            .read_timeout(Some(Duration::from_secs(10)));
        Conn::new(opts)
            .map_err(|e| anyhow!(e).context(format!("connect to {HOST}:{}", self.ports.sql)))
    }

    fn write_client_defaults(&self) -> Result<()> {
        let text = format!(
            "[client]\nuser=root\npassword={}\nhost={HOST}\nport={}\nprotocol=TCP\n",
            self.password, self.ports.sql
        );
        std::fs::write(&self.client_defaults_file, text)
            .with_context(|| format!("write {}", self.client_defaults_file.display()))
    }

    /// Adds the command line, the error-log tail and early stderr to an error.
    fn failure(&self, e: anyhow::Error) -> anyhow::Error {
        let mut text = format!(
            "{e:#}\ncommand: {}\n--- {} (tail) ---\n{}",
            self.cmdline,
            self.error_log.display(),
            self.log_tail()
        );
        let early = crate::file_tail(&self.stdout_log, 10);
        if std::fs::metadata(&self.stdout_log).is_ok_and(|m| m.len() > 0) {
            let _ = write!(
                text,
                "\n--- {} (tail) ---\n{early}",
                self.stdout_log.display()
            );
        }
        anyhow!(text)
    }

    fn status(&self) -> Result<WsrepStatus> {
        let mut conn = self.probe_conn()?;
        wsrep_status(&mut conn)
    }
}

impl Drop for GaleraNode {
    fn drop(&mut self) {
        // Normally stopped by GaleraCluster::stop already; this covers a node that
        // failed to start.
        self.kill();
    }
}

impl std::fmt::Debug for GaleraNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaleraNode")
            .field("name", &self.name)
            .field("ports", &self.ports)
            .field("datadir", &self.datadir)
            .field("pid", &self.pid())
            .finish()
    }
}

/// The wsrep status variables the harness waits on.
struct WsrepStatus {
    state: String,
    cluster_size: usize,
    cluster_status: String,
    ready: String,
}

impl WsrepStatus {
    fn is_synced(&self, expected_size: usize) -> bool {
        self.state == "Synced"
            && self.cluster_status == "Primary"
            && self.ready == "ON"
            && self.cluster_size == expected_size
    }
}

impl std::fmt::Display for WsrepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wsrep_local_state_comment={} wsrep_cluster_status={} wsrep_cluster_size={} wsrep_ready={}",
            self.state, self.cluster_status, self.cluster_size, self.ready
        )
    }
}

fn wsrep_status(conn: &mut Conn) -> Result<WsrepStatus> {
    let rows: Vec<(String, String)> = conn.query(
        "SHOW GLOBAL STATUS WHERE Variable_name IN \
         ('wsrep_local_state_comment', 'wsrep_cluster_size', 'wsrep_cluster_status', 'wsrep_ready')",
    )?;
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    Ok(WsrepStatus {
        state: get("wsrep_local_state_comment"),
        cluster_size: get("wsrep_cluster_size").parse().unwrap_or(0),
        cluster_status: get("wsrep_cluster_status"),
        ready: get("wsrep_ready"),
    })
}

fn is_access_denied(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<mysql::Error>(),
            Some(mysql::Error::MySqlError(err)) if err.code == 1045
        )
    })
}

fn gcomm_address(ports: impl IntoIterator<Item = u16>) -> String {
    let list: Vec<String> = ports.into_iter().map(|p| format!("{HOST}:{p}")).collect();
    format!("gcomm://{}", list.join(","))
}

/// Option-file values are written in double quotes or bare; refuse what would need
/// escaping.
fn check_cnf_value(what: &str, value: &str) -> Result<()> {
    if value.contains(['"', '\\', '\n', '\r']) {
        bail!("{what} {value:?} must not contain '\"', '\\' or line breaks (it goes into an option file)");
    }
    Ok(())
}

/// Makes `dir` an existing, empty directory.
fn reset_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

/// `--wsrep-new-cluster` refuses a `grastate.dat` with `safe_to_bootstrap: 0` (left
/// by a crash or copied with a backup). We only ever bootstrap a cluster of our own.
fn allow_bootstrap(datadir: &Path) -> Result<()> {
    let path = datadir.join("grastate.dat");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    if text.contains("safe_to_bootstrap: 0") {
        std::fs::write(
            &path,
            text.replace("safe_to_bootstrap: 0", "safe_to_bootstrap: 1"),
        )
        .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Keeps a failed attempt's error log as `error.log.N`.
fn rotate_log(log: &Path, n: usize) {
    let mut rotated = log.as_os_str().to_owned();
    rotated.push(format!(".{n}"));
    let _ = std::fs::rename(log, rotated);
}

fn abbreviate(sql: &str) -> String {
    const MAX: usize = 300;
    if sql.len() <= MAX {
        return sql.to_string();
    }
    let mut end = MAX;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &sql[..end], sql.len())
}

fn path_arg(prefix: &str, path: &Path) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(prefix);
    s.push(path.as_os_str());
    s
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| crate::is_executable(&dir.join(name)))
}

fn wsrep_provider() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("COFFER_WSREP_PROVIDER").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("COFFER_WSREP_PROVIDER={} does not exist", p.display());
        }
        return Ok(p);
    }
    PROVIDER_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "Galera provider libgalera_smm.so not found in {} (apt-get install galera-4, or set COFFER_WSREP_PROVIDER)",
                PROVIDER_PATHS.join(", ")
            )
        })
}

fn mariadbd() -> Result<PathBuf> {
    crate::find_executable(
        "COFFER_MARIADBD",
        &["mariadbd", "mysqld"],
        &[
            "/usr/sbin/mariadbd",
            "/usr/local/sbin/mariadbd",
            "/usr/sbin/mysqld",
        ],
    )
    .ok_or_else(|| anyhow!("mariadbd not found (PATH, /usr/sbin; or set COFFER_MARIADBD)"))
}

/// Runs mariadb-install-db into `datadir` (root@localhost without password, no test
/// database), with a private tmpdir next to it.
fn install_db(datadir: &Path, log: &Path, tag: &str) -> Result<()> {
    let bin = crate::find_executable(
        "COFFER_MARIADB_INSTALL_DB",
        &["mariadb-install-db", "mysql_install_db"],
        &[
            "/usr/bin/mariadb-install-db",
            "/usr/local/bin/mariadb-install-db",
        ],
    )
    .ok_or_else(|| anyhow!("mariadb-install-db not found (or set COFFER_MARIADB_INSTALL_DB)"))?;
    let tmpdir = datadir
        .parent()
        .ok_or_else(|| anyhow!("datadir {} has no parent", datadir.display()))?
        .join("tmp");
    std::fs::create_dir_all(&tmpdir).with_context(|| format!("create {}", tmpdir.display()))?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.env(TAG_ENV, format!("{tag}/install"));
    cmd.arg("--no-defaults")
        .arg(path_arg("--datadir=", datadir))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--skip-name-resolve")
        .arg(path_arg("--tmpdir=", &tmpdir))
        .args([
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=48M",
        ]);
    if is_root() {
        cmd.arg("--user=root");
    }
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let mut child = process::spawn(cmd, "mariadb-install-db")?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > INSTALL_TIMEOUT {
            process::kill(&mut child);
            sweep(tag, Some("install"));
            bail!(
                "mariadb-install-db took over {}s\n--- {} ---\n{}",
                INSTALL_TIMEOUT.as_secs(),
                log.display(),
                crate::file_tail(log, LOG_TAIL_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        bail!(
            "mariadb-install-db failed ({status})\n--- {} ---\n{}",
            log.display(),
            crate::file_tail(log, LOG_TAIL_LINES)
        );
    }
    Ok(())
}

/// SIGKILLs every process whose environment has `COFFER_TESTKIT_GALERA=<tag>/<node>`
/// (`node` None: any node of the cluster), until none is left (at most ~2 s).
fn sweep(tag: &str, node: Option<&str>) {
    let wanted = match node {
        Some(node) => format!("{TAG_ENV}={tag}/{node}"),
        None => format!("{TAG_ENV}={tag}/"),
    };
    let me = std::process::id();
    for _ in 0..40 {
        let mut killed = 0;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            // Unreadable (gone, or not ours) and zombies (empty environ) don't match.
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let hit = environ.split(|b| *b == 0).any(|var| match node {
                Some(_) => var == wanted.as_bytes(),
                None => var.starts_with(wanted.as_bytes()),
            });
            if hit {
                // SAFETY: kill(2) on a process that carries our random tag.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                killed += 1;
            }
        }
        if killed == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills a cluster's processes when the test process dies without running `Drop`.
///
/// The servers get `PR_SET_PDEATHSIG`, but their SST helpers do not, and a joiner's
/// `timeout 300 socat ...` sits in a process group of its own: killed only with the
/// test process, they would linger for minutes. The watchdog is a small `sh` in its
/// own process group (so terminal signals spare it), reading a pipe only the test
/// process holds. When that process dies, the pipe reports end-of-file and the
/// watchdog SIGKILLs every process tagged `COFFER_TESTKIT_GALERA=<tag>/...`. A normal
/// `stop` sweeps in-process and then dismisses the watchdog.
struct Watchdog {
    child: Child,
}

const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT TERM PIPE
tag=$1
while read -r _; do :; done
i=0
while [ "$i" -lt 40 ]; do
    found=0
    for f in $(grep -lzs -- "^COFFER_TESTKIT_GALERA=$tag/" /proc/[0-9]*/environ); do
        p=${f#/proc/}
        p=${p%/environ}
        kill -KILL "$p" 2>/dev/null && found=1
    done
    [ "$found" = 0 ] && exit 0
    sleep 0.1
    i=$((i + 1))
done
"#;

impl Watchdog {
    fn start(tag: &str) -> Result<Watchdog> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", WATCHDOG_SCRIPT, "coffer-galera-watchdog", tag])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // Not through process::spawn: it must outlive the test process to clean up.
        let child = cmd.spawn().context("start the Galera watchdog (/bin/sh)")?;
        Ok(Watchdog { child })
    }

    /// Ends the watchdog without a sweep (the caller swept).
    fn dismiss(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.dismiss();
    }
}
