//! A private Postgres cluster for the tests that stop and restart the database, made the one way
//! the tooling makes every cluster: `scripts/lib/postgres.sh` finds the server binaries and runs
//! `initdb` (the same options as scripts/test's and scripts/bench's clusters) in a temporary
//! directory, listening on a free loopback port; the test then drives `pg_ctl` itself (start, stop,
//! restart, TLS) and `pg_ctl stop -m immediate` runs in `Drop` whatever happens. The shared test
//! server on 5432 is never touched. As root, every Postgres binary runs as the `postgres` OS user
//! (initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PgCluster {
    bin: PathBuf,
    /// Owns the data directory, the socket directory and the server log.
    dir: tempfile::TempDir,
    as_postgres_user: bool,
    pub port: u16,
}

/// The shared Postgres tooling of the scripts, run as a command (`bindir`, `init-cluster`).
fn postgres_tooling(args: &[&str]) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/postgres.sh"))
        .args(args);
    without_pg_settings(&mut command);
    command
}

/// The server binaries the tooling picks (the newest under /usr/lib/postgresql, else PATH).
fn postgres_bin_dir() -> PathBuf {
    let out = check(
        postgres_tooling(&["bindir"]).output().expect("bash"),
        "find the Postgres server binaries",
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The tools must not pick up a caller's PG* settings (another host, port or database).
fn without_pg_settings(command: &mut Command) {
    for (name, _) in std::env::vars() {
        if name.starts_with("PG") {
            command.env_remove(name);
        }
    }
}

pub fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn check(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a prepared command off the async runtime's worker threads.
pub async fn run(mut command: Command, what: &'static str) -> Output {
    let output = tokio::task::spawn_blocking(move || command.output().expect("spawn postgres tool"))
        .await
        .expect("blocking task");
    check(output, what)
}

impl PgCluster {
    /// Creates and starts a cluster with a `sessionkeeper` database; trust auth on loopback only.
    pub async fn start() -> PgCluster {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new().prefix("sk-pg-").tempdir().expect("temp dir");
        let as_postgres_user = running_as_root();
        if as_postgres_user {
            let chown = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .output()
                .expect("chown");
            check(chown, "chown the cluster directory to postgres");
        }
        let cluster = PgCluster {
            bin,
            dir,
            as_postgres_user,
            port: free_port(),
        };
        let data = cluster.data_dir();
        let socket_dir = format!("unix_socket_directories = '{}'", cluster.dir.path().display());
        let init = postgres_tooling(&[
            "init-cluster",
            data.to_str().expect("a UTF-8 temp dir"),
            &cluster.port.to_string(),
            &socket_dir,
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
        ]);
        run(init, "init-cluster (scripts/lib/postgres.sh)").await;
        cluster.pg_ctl_start().await;
        let mut createdb = cluster.tool("createdb");
        createdb.args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres",
            "sessionkeeper",
        ]);
        run(createdb, "createdb").await;
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/sessionkeeper", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A Postgres tool, run as the `postgres` user when the tests run as root.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        without_pg_settings(&mut command);
        command.current_dir(self.dir.path());
        command
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = self.tool("pg_ctl");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30"])
            .args(args);
        command
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub async fn pg_ctl_start(&self) {
        run(self.pg_ctl(&["start"]), "pg_ctl start").await;
    }

    /// `pg_ctl stop -m fast`: open sessions are terminated, the server is gone when this returns.
    pub async fn pg_ctl_stop_fast(&self) {
        run(self.pg_ctl(&["-m", "fast", "stop"]), "pg_ctl stop -m fast").await;
    }

    /// `pg_ctl restart -m fast`, waiting until it accepts connections again.
    pub async fn pg_ctl_restart_fast(&self) {
        run(self.pg_ctl(&["-m", "fast", "restart"]), "pg_ctl restart -m fast").await;
    }

    /// Turns TLS on with this certificate and key, and refuses every connection that is not TLS
    /// (`hostssl` only in pg_hba.conf); restarts the server.
    pub async fn require_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        std::fs::write(data.join("server.crt"), cert_pem).unwrap();
        std::fs::write(data.join("server.key"), key_pem).unwrap();
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        if self.as_postgres_user {
            let chown = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&data)
                .output()
                .expect("chown");
            check(chown, "chown the TLS files to postgres");
        }
        self.pg_ctl_restart_fast().await;
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started on a port of its own.
    pub async fn standby_of(primary: &PgCluster) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("sk-pg-standby-")
            .tempdir()
            .expect("temp dir");
        if primary.as_postgres_user {
            let chown = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .output()
                .expect("chown");
            check(chown, "chown the standby directory to postgres");
        }
        let standby = PgCluster {
            bin: primary.bin.clone(),
            dir,
            as_postgres_user: primary.as_postgres_user,
            port: free_port(),
        };
        let mut basebackup = standby.tool("pg_basebackup");
        basebackup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
            ])
            .arg(standby.data_dir())
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]);
        run(basebackup, "pg_basebackup").await;
        // The copied postgresql.conf carries the primary's port and socket directory: the last
        // setting wins, so the standby's own go at the end.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(standby.data_dir().join("postgresql.conf"))
            .and_then(|mut conf| {
                writeln!(
                    conf,
                    "\n# the standby's own\nport = {}\nunix_socket_directories = '{}'",
                    standby.port,
                    standby.dir.path().display()
                )
            })
            .expect("append the standby's port to its postgresql.conf");
        standby.pg_ctl_start().await;
        standby
    }

    /// `pg_ctl promote`: the standby becomes a primary (returns once it accepts writes).
    pub async fn promote(&self) {
        run(self.pg_ctl(&["promote"]), "pg_ctl promote").await;
    }

    /// The postmaster and every backend of this cluster: what SIGSTOP and SIGCONT go to.
    fn processes(&self) -> Vec<String> {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).unwrap_or_default();
        let Some(postmaster) = pid_file.lines().next().map(str::trim).filter(|p| !p.is_empty()) else {
            return Vec::new();
        };
        let children = Command::new("pgrep").args(["-P", postmaster]).output().expect("pgrep");
        std::iter::once(postmaster.to_owned())
            .chain(String::from_utf8_lossy(&children.stdout).lines().map(str::to_owned))
            .collect()
    }

    /// Stops every process of the cluster (SIGSTOP): its TCP connections stay open, nothing
    /// answers — a hung node.
    pub fn hang(&self) {
        for pid in self.processes() {
            let _ = Command::new("kill").args(["-STOP", &pid]).status();
        }
    }

    /// Lets a hung cluster run again (SIGCONT).
    pub fn resume(&self) {
        for pid in self.processes() {
            let _ = Command::new("kill").args(["-CONT", &pid]).status();
        }
    }

    /// The server log, for failure messages.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Whatever happened: no cluster outlives its test (immediate: nothing to keep); a hung
        // one is let go first, or it could not stop.
        self.resume();
        let _ = self
            .pg_ctl(&["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
