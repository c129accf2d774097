//! The task param `args`: extra options for the client programs coffer runs (`mysqldump` for a
//! logical backup, `mysql` for a logical restore). Whoever writes a Task or a session's params
//! chooses them, but the connection, the option files, the files on this host and the
//! protections coffer sets are not theirs to change: options that would do so are refused.
//!
//! The clients accept any unambiguous prefix of a long option (`--def` for
//! `--defaults-file`), `--skip-`/`--disable-`/`--enable-`/`--loose-`/`--maximum-` in front
//! of a name, `_` for `-`, and clusters of short options (`-fh host`), so every one of those
//! spellings is judged.

/// Which client program the options are for (their short options differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientProgram {
    /// `mysqldump` / `mariadb-dump`, for a logical backup.
    Dump,
    /// `mysql` / `mariadb`, for a logical restore.
    Load,
}

/// An option in `args` that coffer refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not allowed ({option}: {why}): remove it from `args`")]
pub struct RefusedArg {
    /// The argument as written.
    pub given: String,
    /// The client option it names (or may name, when abbreviated).
    pub option: String,
    pub why: &'static str,
}

const CONNECTION: &str = "the connection and its TLS come from the AppBinding";
const OPTION_FILES: &str =
    "coffer writes the client's option file; another would change where and as whom it connects";
const CODE: &str = "it loads code on this host";
const FILES: &str = "it reads or writes files on this host";
const PROTECTION: &str =
    "coffer sets it so that a snapshot cannot run commands or read files on this host";
const FORCE: &str = "errors would be skipped and a partial dump or load would report success";
const EXECUTE: &str = "the client would run it instead of the snapshot";
const NO_WORK: &str = "the client would print and exit without doing the work";
const END: &str = "coffer's own options follow the task's, and must stay options";

/// A forbidden long option; `family` also forbids every option whose name starts with it.
struct Rule {
    name: &'static str,
    family: bool,
    why: &'static str,
}

const fn rule(name: &'static str, why: &'static str) -> Rule {
    Rule {
        name,
        family: false,
        why,
    }
}

const fn family(name: &'static str, why: &'static str) -> Rule {
    Rule {
        name,
        family: true,
        why,
    }
}

const RULES: &[Rule] = &[
    rule("host", CONNECTION),
    rule("port", CONNECTION),
    rule("socket", CONNECTION),
    rule("protocol", CONNECTION),
    rule("user", CONNECTION),
    rule("password", CONNECTION),
    rule("pipe", CONNECTION),
    rule("shared-memory-base-name", CONNECTION),
    family("ssl", CONNECTION),
    family("tls", CONNECTION),
    rule("defaults-file", OPTION_FILES),
    rule("defaults-extra-file", OPTION_FILES),
    rule("defaults-group-suffix", OPTION_FILES),
    rule("no-defaults", OPTION_FILES),
    rule("login-path", OPTION_FILES),
    rule("no-login-paths", OPTION_FILES),
    rule("print-defaults", NO_WORK),
    family("plugin", CODE),
    rule("default-auth", CODE),
    rule("tee", FILES),
    rule("pager", FILES),
    rule("result-file", FILES),
    rule("tab", FILES),
    rule("dir", FILES),
    rule("log-error", FILES),
    rule("debug", FILES),
    rule("character-sets-dir", FILES),
    rule("local-infile", FILES),
    rule("load-data-local-dir", FILES),
    rule("sandbox", PROTECTION),
    rule("binary-mode", PROTECTION),
    rule("commands", PROTECTION),
    rule("force", FORCE),
    rule("execute", EXECUTE),
    rule("help", NO_WORK),
    rule("version", NO_WORK),
];

/// Short options that are refused, per program (they differ: `-e` is `--execute` for mysql
/// but `--extended-insert` for mysqldump).
fn short_rule(program: ClientProgram, c: char) -> Option<(&'static str, &'static str)> {
    let common = match c {
        'h' => Some(("host", CONNECTION)),
        'P' => Some(("port", CONNECTION)),
        'S' => Some(("socket", CONNECTION)),
        'u' => Some(("user", CONNECTION)),
        'p' => Some(("password", CONNECTION)),
        'W' => Some(("pipe", CONNECTION)),
        'f' => Some(("force", FORCE)),
        '#' => Some(("debug", FILES)),
        '?' => Some(("help", NO_WORK)),
        'V' => Some(("version", NO_WORK)),
        _ => None,
    };
    common.or(match (program, c) {
        (ClientProgram::Load, 'e') => Some(("execute", EXECUTE)),
        (ClientProgram::Load, 'I') => Some(("help", NO_WORK)),
        (ClientProgram::Dump, 'r') => Some(("result-file", FILES)),
        (ClientProgram::Dump, 'T') => Some(("tab", FILES)),
        _ => None,
    })
}

/// Short options whose value may follow in the same argument (`-Dmydb`): the rest of the
/// cluster is that value, not more options.
fn short_takes_value(program: ClientProgram, c: char) -> bool {
    match program {
        ClientProgram::Load => matches!(c, 'D'),
        ClientProgram::Dump => matches!(c, 'w'),
    }
}

/// The option name a long argument sets: without `--`, `=value`, and the prefixes that
/// only change how it is set; `_` and `-` are the same to the clients.
fn long_name(arg: &str) -> String {
    let body = &arg[2..];
    let mut name = body
        .split_once('=')
        .map_or(body, |(n, _)| n)
        .to_ascii_lowercase()
        .replace('_', "-");
    loop {
        let stripped = ["loose-", "skip-", "disable-", "enable-", "maximum-"]
            .iter()
            .find_map(|p| name.strip_prefix(p).map(String::from));
        match stripped {
            Some(s) => name = s,
            None => return name,
        }
    }
}

fn check_long(arg: &str) -> Result<(), RefusedArg> {
    let name = long_name(arg);
    for r in RULES {
        // An abbreviation the client may expand to a forbidden option is refused too.
        let hit = name == r.name
            || r.name.starts_with(name.as_str())
            || (r.family && name.starts_with(r.name));
        if hit {
            return Err(RefusedArg {
                given: arg.to_string(),
                option: format!("--{}", r.name),
                why: r.why,
            });
        }
    }
    Ok(())
}

fn check_short(program: ClientProgram, arg: &str) -> Result<(), RefusedArg> {
    for c in arg[1..].chars() {
        if let Some((option, why)) = short_rule(program, c) {
            return Err(RefusedArg {
                given: arg.to_string(),
                option: format!("-{c} (--{option})"),
                why,
            });
        }
        if short_takes_value(program, c) {
            break;
        }
    }
    Ok(())
}

/// Refuses `args` that redirect the connection, change option files, load code, touch files on
/// this host, or turn off the protections coffer sets. Every argument starting with `-` is
/// judged, whatever precedes it.
pub fn check(args: &[String], program: ClientProgram) -> Result<(), RefusedArg> {
    for arg in args {
        if arg == "--" {
            return Err(RefusedArg {
                given: arg.clone(),
                option: "--".into(),
                why: END,
            });
        }
        if arg.starts_with("--") {
            check_long(arg)?;
        } else if arg.len() > 1 && arg.starts_with('-') {
            check_short(program, arg)?;
        }
    }
    Ok(())
}

/// Where a logical dump's binlog position comes from, given the task's `args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpPosition {
    /// The args say nothing about it: coffer adds `--master-data=2` (commented lines, so a
    /// restore does not run them) where the server writes a binlog. With the default
    /// `--single-transaction` MariaDB's mysqldump reads the position of its consistent
    /// snapshot (`binlog_snapshot_file`/`_position`, and `BINLOG_GTID_POS` of them) without
    /// any lock or privilege more.
    Add,
    /// The args turn `--master-data` on themselves: the dump carries the position.
    Given,
    /// The args turn it off, ask for `--dump-slave` (whose position is the primary's, not
    /// this server's), or turn `--single-transaction` off (coffer's `--master-data` would
    /// then lock every table for the whole dump): no position is recorded.
    Off,
}

/// The value a long option sets, if `arg` names `option` (any prefix from `min` on, `_` for
/// `-`, `--skip-`/`--disable-` meaning 0, no value meaning 1).
fn long_value(arg: &str, option: &str, min: usize) -> Option<u64> {
    if !arg.starts_with("--") {
        return None;
    }
    let name = long_name(arg);
    if name.len() < min || !option.starts_with(name.as_str()) {
        return None;
    }
    let body = arg[2..].to_ascii_lowercase().replace('_', "-");
    let body = body.strip_prefix("loose-").unwrap_or(&body);
    if body.starts_with("skip-") || body.starts_with("disable-") {
        return Some(0);
    }
    match arg.split_once('=') {
        None => Some(1),
        Some((_, v)) => Some(v.trim().parse().unwrap_or(1)),
    }
}

/// Decides [`DumpPosition`] from the task's mysqldump `args` (the last setting wins, as in
/// the client).
pub fn dump_position(args: &[String]) -> DumpPosition {
    let mut master = None;
    let mut slave = None;
    let mut single = 1;
    for a in args {
        if let Some(v) = long_value(a, "single-transaction", "single".len()) {
            single = v;
        }
        // `--master` is the shortest spelling the client takes for `--master-data` alone.
        if let Some(v) = long_value(a, "master-data", "master".len())
            .or_else(|| long_value(a, "source-data", "source".len()))
        {
            master = Some(v);
        }
        if let Some(v) = long_value(a, "dump-slave", "dump-s".len())
            .or_else(|| long_value(a, "dump-replica", "dump-r".len()))
        {
            slave = Some(v);
        }
    }
    match (master, slave) {
        (_, Some(v)) if v > 0 => DumpPosition::Off,
        (None, _) if single > 0 => DumpPosition::Add,
        (None, _) => DumpPosition::Off,
        (Some(0), _) => DumpPosition::Off,
        (Some(_), _) => DumpPosition::Given,
    }
}

/// Splits a Stash `args` param on whitespace, as Stash does.
pub fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Splits and checks a Stash `args` param.
pub fn parse(s: &str, program: ClientProgram) -> Result<Vec<String>, RefusedArg> {
    let args = split(s);
    check(&args, program)?;
    Ok(args)
}

/// For apply-time validation: the first refused `args` among a session's task params, as
/// (field path, message), e.g. `("spec.task.params[0].value", "...")`. Use
/// [`ClientProgram::Dump`] for a BackupConfiguration, [`ClientProgram::Load`] for a
/// RestoreSession.
pub fn refused_param(
    path: &str,
    params: &[crate::meta::Param],
    program: ClientProgram,
) -> Option<(String, String)> {
    params.iter().enumerate().find_map(|(i, p)| {
        (p.name == "args")
            .then(|| parse(&p.value, program).err())
            .flatten()
            .map(|e| (format!("{path}[{i}].value"), e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientProgram::{Dump, Load};

    #[test]
    fn a_manifest_param_is_named_by_its_field_path() {
        let params = [
            crate::meta::Param {
                name: "method".into(),
                value: "--host=x".into(),
            },
            crate::meta::Param {
                name: "args".into(),
                value: "--databases app --socket=/tmp/s".into(),
            },
        ];
        let (path, message) = refused_param("spec.task.params", &params, Dump).unwrap();
        assert_eq!(path, "spec.task.params[1].value");
        assert!(message.contains("--socket"), "{message}");
        assert_eq!(refused_param("spec.task.params", &params[..1], Load), None);
    }

    fn refused(program: ClientProgram, args: &str) -> Option<String> {
        parse(args, program).err().map(|e| e.option)
    }

    #[test]
    fn the_dump_position_follows_the_last_master_data_and_any_dump_slave() {
        use DumpPosition::{Add, Given, Off};
        for (args, want) in [
            ("", Add),
            ("--all-databases --single-transaction", Add),
            ("--master-data=2", Given),
            ("--master-data", Given),
            ("--master_data=1 --gtid", Given),
            ("--master=2", Given),
            ("--master-data=0", Off),
            ("--skip-master-data", Off),
            ("--loose-skip-master-data", Off),
            ("--master-data=2 --master-data=0", Off),
            ("--master-data=0 --master-data=1", Given),
            ("--dump-slave", Off),
            ("--dump-slave=2 --master-data=2", Off),
            ("--dump-slave=0", Add),
            ("--source-data=2", Given),
            ("--ma=2", Add),
            ("--skip-single-transaction", Off),
            ("--skip-single-transaction --master-data=2", Given),
            ("--skip-single-transaction --single-transaction", Add),
        ] {
            assert_eq!(dump_position(&split(args)), want, "{args}");
        }
    }

    #[test]
    fn ordinary_options_pass() {
        for args in [
            "",
            "--all-databases",
            "--databases app other --single-transaction --quick --routines --triggers --events",
            "--skip-lock-tables --skip-add-drop-table --hex-blob --tz-utc --opt --compact",
            "--default-character-set=utf8mb4 --max-allowed-packet=1G --column-statistics=0",
            "--ignore-table=app.t --where=id>1 --no-data --master-data=2 --galera-info",
            "--set-gtid-purged=OFF --init-command=SET@x=1 --debug-info --debug-check",
            "-A -B app -R -E -q -Q -c -e -K --compress --connect-timeout=5 --system=all",
            "-wid>1 --dump-slave --log-queries --order-by-primary",
        ] {
            assert_eq!(refused(Dump, args), None, "{args}");
        }
        for args in [
            "app",
            "--one-database app",
            "-D app -o",
            "-Dapp",
            "--init-command=SET@x=1 --max-allowed-packet=1G --default-character-set=utf8mb4",
            "--comments -v -s -N --show-warnings --abort-source-on-error",
        ] {
            assert_eq!(refused(Load, args), None, "{args}");
        }
    }

    #[test]
    fn connection_option_files_and_files_are_refused_in_every_spelling() {
        let cases: &[(ClientProgram, &str, &str)] = &[
            (Dump, "--host=10.0.0.9", "--host"),
            (Dump, "--databases app --host 10.0.0.9", "--host"),
            (Dump, "--ho=10.0.0.9", "--host"),
            (Dump, "--HOST=x", "--host"),
            (Load, "--port=3307", "--port"),
            (Load, "--po=3307", "--port"),
            (Load, "--socket=/tmp/s", "--socket"),
            (Load, "--soc=/tmp/s", "--socket"),
            (Load, "--protocol=socket", "--protocol"),
            (Dump, "--user=root", "--user"),
            (Dump, "--password=x", "--password"),
            (Dump, "--defaults-file=/etc/x", "--defaults-file"),
            (
                Dump,
                "--defaults-extra-file=/etc/x",
                "--defaults-extra-file",
            ),
            (
                Dump,
                "--defaults_extra_file=/etc/x",
                "--defaults-extra-file",
            ),
            (Dump, "--def=/etc/x", "--defaults-file"),
            (Dump, "--defaults-group-suffix=x", "--defaults-group-suffix"),
            (Load, "--no-defaults", "--no-defaults"),
            (Load, "--login-path=prod", "--login-path"),
            (Load, "--print-defaults", "--print-defaults"),
            (Load, "--plugin-dir=/tmp", "--plugin"),
            (Load, "--plugin_dir=/tmp", "--plugin"),
            (
                Load,
                "--plugin-authentication-kerberos-client-mode=x",
                "--plugin",
            ),
            (Load, "--default-auth=evil", "--default-auth"),
            (Load, "--default-a=evil", "--default-auth"),
            (Load, "--tee=/etc/cron.d/x", "--tee"),
            (Load, "--pager=sh", "--pager"),
            (Dump, "--result-file=/etc/x", "--result-file"),
            (Dump, "--tab=/tmp", "--tab"),
            (Dump, "--log-error=/etc/x", "--log-error"),
            (Dump, "--debug=d:o,/etc/x", "--debug"),
            (Dump, "--dir=/tmp/d", "--dir"),
            (Load, "--local-infile", "--local-infile"),
            (Load, "--local-infile=1", "--local-infile"),
            (Load, "--character-sets-dir=/tmp", "--character-sets-dir"),
            (Load, "--ssl-verify-server-cert=0", "--ssl"),
            (Load, "--skip-ssl", "--ssl"),
            (Load, "--tls-version=TLSv1", "--tls"),
        ];
        for (program, args, option) in cases {
            assert_eq!(
                refused(*program, args).as_deref(),
                Some(*option),
                "{program:?} {args}"
            );
        }
    }

    #[test]
    fn the_protections_cannot_be_turned_off() {
        for args in [
            "--skip-sandbox",
            "--sandbox=0",
            "--disable-sandbox",
            "--loose-skip-sandbox",
            "--skip-binary-mode",
            "--binary-mode=FALSE",
            "--enable-local-infile",
            "--loose-local-infile=1",
            "--commands=ON",
            "--force",
            "--fo",
            "-f",
            "--execute=system\tid",
            "-e",
            "--",
            "app --",
        ] {
            assert!(refused(Load, args).is_some(), "{args}");
        }
    }

    #[test]
    fn short_option_clusters_are_read_like_the_client_reads_them() {
        assert_eq!(refused(Load, "-h10.0.0.9").as_deref(), Some("-h (--host)"));
        assert_eq!(
            refused(Load, "-vh 10.0.0.9").as_deref(),
            Some("-h (--host)")
        );
        assert_eq!(refused(Load, "-vfs").as_deref(), Some("-f (--force)"));
        assert_eq!(refused(Dump, "-P3307").as_deref(), Some("-P (--port)"));
        assert_eq!(refused(Dump, "-S/tmp/s").as_deref(), Some("-S (--socket)"));
        assert_eq!(refused(Dump, "-uroot").as_deref(), Some("-u (--user)"));
        assert_eq!(
            refused(Dump, "-psecret").as_deref(),
            Some("-p (--password)")
        );
        assert_eq!(
            refused(Dump, "-r/etc/x").as_deref(),
            Some("-r (--result-file)")
        );
        assert_eq!(refused(Dump, "-T/tmp").as_deref(), Some("-T (--tab)"));
        assert_eq!(refused(Dump, "-#d:o,/x").as_deref(), Some("-# (--debug)"));
        assert_eq!(refused(Load, "-eselect").as_deref(), Some("-e (--execute)"));
        // -e and -T mean other things to the other program.
        assert_eq!(refused(Dump, "-e"), None);
        assert_eq!(refused(Load, "-T"), None);
        // After an option that takes its value in the same argument, the rest is the value.
        assert_eq!(refused(Load, "-Dhost"), None);
        assert_eq!(refused(Load, "-vDhost"), None);
        assert_eq!(refused(Dump, "-whost=1"), None);
    }

    #[test]
    fn the_error_names_the_param_the_argument_and_the_reason() {
        let e = parse("--databases app --defaults-e=/tmp/x", Dump).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("remove it from `args`"), "{text}");
        assert!(text.contains("`--defaults-e=/tmp/x`"), "{text}");
        assert!(text.contains("--defaults-extra-file"), "{text}");
        assert!(text.contains("option file"), "{text}");
    }
}
