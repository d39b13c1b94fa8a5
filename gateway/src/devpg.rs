//! A throwaway PostgreSQL 15 cluster for tests and demos (like `devpki`, a
//! development tool, never used by a production gateway).
//!
//! [`DevPostgres::start`] runs `initdb` and `pg_ctl` from the PostgreSQL
//! binary directory (`BASHU_PG_BIN`, default `/usr/lib/postgresql/15/bin`)
//! in a fresh temporary directory, listening on 127.0.0.1 on a free port
//! with `fsync = on`, password authentication (a random password) and no
//! other listener. `initdb` refuses to run as root, so a root process runs
//! both as the `postgres` user (`runuser -u postgres --`) on a directory
//! that user owns. Each test takes its own database
//! ([`DevPostgres::create_database`]), which costs a `CREATE DATABASE`, not
//! a cluster.
//!
//! Cleanup does not depend on the test process ending well: next to the
//! server runs a small guard process holding a pipe from this process; when
//! the pipe closes (drop, exit, panic or `kill -9`), the guard stops the
//! server (`pg_ctl stop -m immediate`) and removes the directory. Dropping
//! a [`DevPostgres`] also stops it at once.
//!
//! Tests that need PostgreSQL call [`DevPostgres::for_tests`]: when the
//! binaries are absent it prints `SKIPPED: PostgreSQL 15 not found …` and
//! returns `None` (the test then passes without running), unless
//! `BASHU_REQUIRE_POSTGRES=1`, which turns that into a failure. Binaries
//! that are present but cannot start a cluster are always a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Where Debian's `postgresql-15` package puts the server binaries.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Environment variable naming another PostgreSQL binary directory.
pub const PG_BIN_ENV: &str = "BASHU_PG_BIN";

/// Set to `1` to make a missing PostgreSQL a test failure instead of a skip
/// (`CI=true` does the same).
pub const REQUIRE_ENV: &str = "BASHU_REQUIRE_POSTGRES";

/// The system user that runs the cluster when this process is root.
const PG_USER: &str = "postgres";

/// Database superuser created by `initdb`.
const SUPERUSER: &str = "postgres";

/// How long `pg_ctl start` may wait for the server to accept connections.
const START_TIMEOUT_SECS: u32 = 60;

/// Why a dev cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum DevPgError {
    #[error("PostgreSQL binaries not found in {0} (set {PG_BIN_ENV} to their directory)")]
    NotFound(PathBuf),
    #[error("cannot create the cluster directory: {0}")]
    Dir(std::io::Error),
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{step} failed ({status}): {output}")]
    Step {
        step: &'static str,
        status: String,
        output: String,
    },
    #[error("cannot pick a free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
    #[error("PostgreSQL client: {0}")]
    Client(String),
}

/// A running throwaway cluster. Stopped (and its directory removed) when
/// dropped, or by its guard process when this process ends in any way.
#[derive(Debug)]
pub struct DevPostgres {
    bin: PathBuf,
    /// The temporary directory: `data/`, the log and the socket live here.
    dir: PathBuf,
    port: u16,
    password: String,
    run_as_postgres: bool,
    /// The write end of the guard's pipe; closing it stops the cluster.
    guard_pipe: Option<ChildStdin>,
    guard: Option<Child>,
    databases: AtomicU64,
}

impl DevPostgres {
    /// The binary directory to use: `BASHU_PG_BIN` or the Debian default,
    /// if `initdb`, `pg_ctl` and `postgres` are all there.
    pub fn find_bin() -> Result<PathBuf, DevPgError> {
        let bin = std::env::var_os(PG_BIN_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_PG_BIN), PathBuf::from);
        if ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| bin.join(b).is_file())
        {
            Ok(bin)
        } else {
            Err(DevPgError::NotFound(bin))
        }
    }

    /// Whether tests must fail rather than skip without PostgreSQL:
    /// `BASHU_REQUIRE_POSTGRES=1`, or any CI run (`CI=true`, as CI services
    /// set it), where a silent skip would hide the HA tests.
    pub fn required() -> bool {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        set(REQUIRE_ENV) || set("CI")
    }

    /// One cluster shared by every test of this test binary, started on
    /// first use; `None` (after printing a `SKIPPED` line naming `test`)
    /// when PostgreSQL is not installed and not required.
    ///
    /// # Panics
    /// When the binaries exist but the cluster does not start, or when they
    /// are missing and `BASHU_REQUIRE_POSTGRES=1`: in a test, that is the
    /// failure the caller wants.
    #[allow(clippy::panic)] // a test helper: failing the test is its job
    pub fn for_tests(test: &str) -> Option<Arc<DevPostgres>> {
        static SHARED: OnceLock<Result<Arc<DevPostgres>, String>> = OnceLock::new();
        if let Err(e) = Self::find_bin() {
            if Self::required() {
                panic!("{REQUIRE_ENV}=1 but PostgreSQL is unavailable: {e}");
            }
            print_skip(&format!(
                "SKIPPED: PostgreSQL 15 not found ({e}); {test} did not run"
            ));
            return None;
        }
        match SHARED.get_or_init(|| Self::start().map(Arc::new).map_err(|e| e.to_string())) {
            Ok(pg) => Some(Arc::clone(pg)),
            Err(e) => panic!("PostgreSQL is installed but the test cluster did not start: {e}"),
        }
    }

    /// Starts a new cluster (initdb, pg_ctl start), typically in 1–3 s.
    pub fn start() -> Result<Self, DevPgError> {
        let bin = Self::find_bin()?;
        let run_as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("bashu-pg-")
            .tempdir()
            .map_err(DevPgError::Dir)?
            .keep();
        let password = uuid::Uuid::new_v4().simple().to_string();
        let mut pg = Self {
            bin,
            dir,
            port: 0,
            password,
            run_as_postgres,
            guard_pipe: None,
            guard: None,
            databases: AtomicU64::new(0),
        };
        // From here on, dropping `pg` removes the directory.
        pg.init()?;
        pg.spawn_guard()?;
        pg.start_server()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command for a PostgreSQL binary, as the `postgres` user if root.
    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_USER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn init(&mut self) -> Result<(), DevPgError> {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", self.password)).map_err(DevPgError::Dir)?;
        if self.run_as_postgres {
            run(
                "chown",
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{PG_USER}:"))
                    .arg(&self.dir),
            )?;
        }
        let mut initdb = self.pg_command("initdb");
        initdb
            .arg("-D")
            .arg(self.data())
            .args(["-U", SUPERUSER, "-E", "UTF8", "--no-locale", "--no-sync"])
            .args(["--auth-host=scram-sha-256", "--auth-local=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let result = run("initdb", &mut initdb);
        let _ = std::fs::remove_file(&pwfile);
        result
    }

    /// The guard: `sh` waits for EOF on its stdin, then stops the server
    /// and removes the directory. Its own process group, so a Ctrl-C to
    /// the test run does not kill it before it has cleaned up.
    fn spawn_guard(&mut self) -> Result<(), DevPgError> {
        let mut stop = self.pg_command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["stop", "-m", "immediate", "-w"]);
        let mut argv = vec![stop.get_program().to_owned()];
        argv.extend(stop.get_args().map(ToOwned::to_owned));
        let mut guard = Command::new("sh");
        guard
            .arg("-c")
            .arg(r#"read _; "$@" >/dev/null 2>&1; rm -rf -- "$BASHU_DEVPG_DIR""#)
            .arg("bashu-devpg-guard")
            .args(argv)
            .env("BASHU_DEVPG_DIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            guard.process_group(0);
        }
        let mut child = guard.spawn().map_err(|source| DevPgError::Spawn {
            program: "sh".into(),
            source,
        })?;
        self.guard_pipe = child.stdin.take();
        self.guard = Some(child);
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), DevPgError> {
        // A free port can be taken between the probe and the bind: retry.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{}' \
                 -c fsync=on -c synchronous_commit=on -c full_page_writes=on \
                 -c max_connections=300 -c shared_buffers=32MB",
                self.dir.display()
            );
            let mut start = self.pg_command("pg_ctl");
            start
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args([
                    "-w",
                    "-t",
                    &START_TIMEOUT_SECS.to_string(),
                    "-o",
                    &options,
                    "start",
                ]);
            match run("pg_ctl start", &mut start) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(match last {
            Some(DevPgError::Step { step, status, output }) => DevPgError::Step {
                step,
                status,
                output: format!("{output}\nserver log:\n{}", tail(&log, 2000)),
            },
            Some(other) => other,
            None => DevPgError::Port(std::io::Error::other("no attempt made")),
        })
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data, log, socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection URL for `database` as the superuser (with its password).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Creates a new, empty database and returns its URL. Safe to call from
    /// async and sync code alike (the client runs on its own thread).
    pub fn create_database(&self) -> Result<String, DevPgError> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("bashu_{}_{n}", std::process::id());
        let admin = self.url("postgres");
        let sql = format!("CREATE DATABASE {name}");
        std::thread::scope(|s| {
            s.spawn(|| execute_on_own_runtime(&admin, &sql))
                .join()
                .unwrap_or_else(|_| Err(DevPgError::Client("client thread panicked".into())))
        })?;
        Ok(self.url(&name))
    }

    /// The tail of the server log, for failure messages.
    pub fn log_tail(&self, max: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        tail(&log, max).to_owned()
    }
}

impl Drop for DevPostgres {
    fn drop(&mut self) {
        // Closing the pipe makes the guard stop the server and remove the
        // directory; wait for it so the caller sees a clean machine.
        drop(self.guard_pipe.take());
        match self.guard.take() {
            Some(mut guard) => {
                let _ = guard.wait();
            }
            None => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// Runs one SQL statement on a fresh connection, on a runtime of its own.
fn execute_on_own_runtime(url: &str, sql: &str) -> Result<(), DevPgError> {
    let client_error = |e: &dyn std::fmt::Display| DevPgError::Client(e.to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| client_error(&e))?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| client_error(&e))?;
        let conn = tokio::spawn(connection);
        let result = client.batch_execute(sql).await.map_err(|e| client_error(&e));
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        result
    })
}

fn run(step: &'static str, cmd: &mut Command) -> Result<(), DevPgError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| DevPgError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(DevPgError::Step {
        step,
        status: out.status.to_string(),
        output: tail(&output, 2000).to_owned(),
    })
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn free_port() -> Result<u16, DevPgError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(DevPgError::Port)?;
    let port = listener.local_addr().map_err(DevPgError::Port)?.port();
    Ok(port)
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        rustix::process::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Writes `line` straight to stderr: the test harness captures `println!`
/// of passing tests, and a skip must be visible in the run's output.
pub fn print_skip(line: &str) {
    let mut out = std::io::stderr();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster starts, takes databases and connects with its password;
    /// dropping it stops the server and removes its directory.
    #[test]
    fn cluster_starts_serves_fresh_databases_and_cleans_up() {
        if DevPostgres::find_bin().is_err() && !DevPostgres::required() {
            print_skip("SKIPPED: PostgreSQL 15 not found; devpg test did not run");
            return;
        }
        let pg = DevPostgres::start().unwrap();
        let (a, b) = (pg.create_database().unwrap(), pg.create_database().unwrap());
        assert_ne!(a, b, "each call makes a new database");
        assert!(a.starts_with(&format!(
            "postgres://postgres:{}@127.0.0.1:{}/",
            pg.password,
            pg.port()
        )));
        let show = |url: &str, sql: &str| {
            let url = url.to_owned();
            let sql = sql.to_owned();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    let row = client.query_one(&sql, &[]).await.unwrap();
                    row.get::<_, String>(0)
                })
            })
            .join()
            .unwrap()
        };
        assert_eq!(show(&a, "SHOW fsync"), "on");
        assert_eq!(show(&a, "SHOW listen_addresses"), "127.0.0.1");
        assert!(show(&a, "SELECT version()").starts_with("PostgreSQL"));
        // A wrong password is refused: the cluster is not open to anyone.
        let wrong = a.replace(&pg.password, "wrong");
        let refused = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
                    .await
                    .is_err()
            })
        })
        .join()
        .unwrap();
        assert!(refused, "a wrong password must not connect");

        let dir = pg.dir().to_owned();
        let port = pg.port();
        drop(pg);
        assert!(!dir.exists(), "{} must be removed", dir.display());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the server must be stopped"
        );
    }
}
