//! A real HTTP server for tests: Debian's nginx (`nginx-light`) in the foreground, on a
//! configuration the test writes, with its files in a directory of its own.

use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// An nginx process (no master, no daemon) on the `http { … }` contents a test gives;
/// killed by PID and reaped when dropped, its directory removed.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with `http` (the contents of its `http { … }` block: `server { … }`
    /// blocks and directives such as `keepalive_requests`) in `dir` (created; its
    /// configuration, logs and temporary files), and waits (at most 10 s) until each of
    /// `ports` on 127.0.0.1 takes connections. Access logs are off; the error log is at
    /// `info`.
    ///
    /// # Errors
    /// The spawn error (nginx not installed: `apt-get install nginx-light`), or
    /// [`io::ErrorKind::TimedOut`] with nginx's own log when a port does not listen.
    pub fn start(dir: &Path, http: &str, ports: &[u16]) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n{http}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = crate::command("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log"))?)
            .spawn()?;
        let mut nginx = Self {
            child,
            dir: dir.to_owned(),
        };
        for &port in ports {
            let up = crate::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up.is_none() || !matches!(nginx.child.try_wait(), Ok(None)) {
                let log = nginx.log();
                nginx.stop();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nginx did not listen on 127.0.0.1:{port}: {log}"),
                ));
            }
        }
        Ok(nginx)
    }

    /// Its error log and standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Kills it (SIGKILL, by PID) and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
