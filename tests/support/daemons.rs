//! Debian's servers on loopback: Prometheus, Redis and webdis (Redis's HTTP front) for the
//! stock metric sources' tests, and the start of any other (the OCI registry). Each runs on a
//! free port in a directory of its own and is killed on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process; killed on drop.
pub struct Daemon {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn binary<'a>(path: &'a str, package: &str) -> anyhow::Result<&'a Path> {
    let path = Path::new(path);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: install Debian's {package} (tests/run.sh does)",
        path.display()
    );
    Ok(path)
}

/// Starts `command` (whose working directory is `dir`, kept as long as the daemon) and waits
/// until `addr` accepts.
pub fn start(mut command: Command, addr: String, dir: tempfile::TempDir) -> anyhow::Result<Daemon> {
    let name = command.get_program().to_string_lossy().into_owned();
    let child = command
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut daemon = Daemon {
        child,
        addr,
        _dir: dir,
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(&daemon.addr).is_err() {
        if let Some(status) = daemon.child.try_wait()? {
            anyhow::bail!("{name} exited with {status} before listening");
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "{name} did not listen on {} within 20 s",
            daemon.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(daemon)
}

/// Prometheus scraping `target` (`host:port`, path `/metrics`) every second.
pub fn prometheus(target: &str) -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )?;
    let mut command = Command::new(binary("/usr/bin/prometheus", "prometheus")?);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=error");
    let daemon = start(command, addr, dir)?;
    // It listens before its storage is open and answers queries 503 until then (seen under
    // load as a failed first query): wait for its readiness endpoint.
    let started = Instant::now();
    while !answers_ok(&daemon.addr, "/-/ready") {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "prometheus on {} was not ready within 20 s",
            daemon.addr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(daemon)
}

/// Whether `GET path` on `addr` answers 200.
fn answers_ok(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// redis-server with no persistence.
pub fn redis() -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut command = Command::new(binary("/usr/bin/redis-server", "redis-server")?);
    command.args([
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    start(command, format!("127.0.0.1:{port}"), dir)
}

/// webdis in front of `redis`, its ACL allowing only `LLEN` (what the queue-length source
/// needs).
pub fn webdis(redis: &Daemon) -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (redis_host, redis_port) = redis
        .addr
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("redis address {}", redis.addr))?;
    let config = serde_json::json!({
        "redis_host": redis_host,
        "redis_port": redis_port.parse::<u16>()?,
        "http_host": "127.0.0.1",
        "http_port": port,
        "threads": 1,
        "daemonize": false,
        "verbosity": 0,
        "logfile": dir.path().join("webdis.log"),
        "acl": [
            { "disabled": ["*"] },
            { "enabled": ["LLEN"] }
        ]
    });
    let path = dir.path().join("webdis.json");
    std::fs::write(&path, config.to_string())?;
    let mut command = Command::new(binary("/usr/bin/webdis", "webdis")?);
    command.arg(&path);
    start(command, format!("127.0.0.1:{port}"), dir)
}

/// Runs `redis-cli` against `redis` with `args`.
pub fn redis_cli(redis: &Daemon, args: &[&str]) -> anyhow::Result<String> {
    let (host, port) = redis
        .addr
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("redis address {}", redis.addr))?;
    let out = Command::new(binary("/usr/bin/redis-cli", "redis-tools")?)
        .args(["-h", host, "-p", port])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
