//! A tiny real server for labs, run on threads of the test (or example) process with its
//! listening socket inside a lab namespace.
//!
//! Protocol, decided by the first line a client sends:
//!
//! * `GET …` / `HEAD …` (HTTP): answers `HTTP/1.0 200 OK` with the server's page as the
//!   body and closes — `curl http://VIP/` works;
//! * `ECHO…`: answers the page as one line, then echoes every byte back until the client
//!   closes — a long-lived connection whose liveness a test can check at any time;
//! * anything else, or a connection closed without data (a `TCP_CHECK`): closed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Lab;

/// A running real server; [`stop`](Self::stop) (or drop) closes the listener and every
/// connection.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    page: String,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `addr` inside `host` of `lab` and serves `page`.
    ///
    /// # Errors
    /// The bind failed.
    pub fn start(lab: &Lab, host: &str, addr: SocketAddr, page: &str) -> io::Result<Self> {
        let listener = lab.bind(host, addr)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, requests, page) =
                (Arc::clone(&stop), Arc::clone(&requests), page.to_owned());
            std::thread::spawn(move || accept_loop(&listener, &stop, &requests, &page))
        };
        Ok(Self {
            addr,
            page: page.to_owned(),
            stop,
            requests,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page it serves.
    pub fn page(&self) -> &str {
        &self.page
    }

    /// Requests (HTTP or ECHO) served so far; health-check connects are not counted.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// True until [`stop`](Self::stop).
    pub fn is_running(&self) -> bool {
        self.thread.is_some()
    }

    /// Closes the listener (new connections are refused) and every open connection
    /// (within about 100 ms).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: &TcpListener,
    stop: &Arc<AtomicBool>,
    requests: &Arc<AtomicU64>,
    page: &str,
) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let (stop, requests, page) =
                    (Arc::clone(stop), Arc::clone(requests), page.to_owned());
                conns.push(std::thread::spawn(move || {
                    let _ = serve(s, &stop, &requests, &page);
                }));
                conns.retain(|c| !c.is_finished());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Reads into `buf` with a 100 ms timeout, retrying until data, EOF, an error, the stop
/// flag, or 30 s without data.
fn read_some(s: &mut impl Read, buf: &mut [u8], stop: &AtomicBool) -> io::Result<usize> {
    for _ in 0..300 {
        if stop.load(Ordering::Relaxed) {
            return Ok(0);
        }
        match s.read(buf) {
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(0)
}

fn serve(s: TcpStream, stop: &AtomicBool, requests: &AtomicU64, page: &str) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    // The first line (bounded: 4 KiB, 30 s).
    let mut first = Vec::new();
    for _ in 0..300 {
        if stop.load(Ordering::Relaxed) || first.len() > 4096 {
            return Ok(());
        }
        match r.read_until(b'\n', &mut first) {
            Ok(0) => return Ok(()),
            Ok(_) if first.ends_with(b"\n") => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    if first.starts_with(b"GET ") || first.starts_with(b"HEAD ") {
        // Skip the rest of the head (bounded), answer, close.
        let mut line = Vec::new();
        for _ in 0..100 {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) if line == b"\r\n" || line == b"\n" => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let body = format!("{page}\n");
        write!(
            w,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        if first.starts_with(b"GET ") {
            w.write_all(body.as_bytes())?;
        }
        w.flush()?;
        return Ok(());
    }
    if first.starts_with(b"ECHO") {
        requests.fetch_add(1, Ordering::Relaxed);
        writeln!(w, "{page}")?;
        // Bytes already buffered after the first line, then the socket.
        let pending = r.buffer().to_vec();
        w.write_all(&pending)?;
        let mut s = r.into_inner();
        let mut buf = [0u8; 4096];
        loop {
            let n = read_some(&mut s, &mut buf, stop)?;
            if n == 0 {
                return Ok(());
            }
            w.write_all(&buf[..n])?;
        }
    }
    Ok(())
}

/// A client's long-lived `ECHO` connection (see the [module](self) docs).
#[derive(Debug)]
pub struct EchoConn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The page of the server that answered.
    pub server: String,
}

impl EchoConn {
    /// Opens an `ECHO` connection from inside `host` to `addr` and reads the page line.
    ///
    /// # Errors
    /// Connecting or the greeting failed (within `timeout`).
    pub fn open(lab: &Lab, host: &str, addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let mut stream = lab.connect(host, addr, timeout)?;
        stream.write_all(b"ECHO\n")?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut server = String::new();
        reader.read_line(&mut server)?;
        if server.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the greeting",
            ));
        }
        Ok(Self {
            stream,
            reader,
            server: server.trim().to_owned(),
        })
    }

    /// Sends `line` and checks it comes back unchanged (within the connect timeout).
    ///
    /// # Errors
    /// The connection failed, closed, or echoed something else.
    pub fn ping(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.stream, "{line}")?;
        let mut back = String::new();
        self.reader.read_line(&mut back)?;
        if back.trim_end_matches('\n') == line {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "echo of {line:?} came back as {back:?}"
            )))
        }
    }
}
