//! A real gRPC server and client for tests: Debian's `python3-grpcio` (gRPC's C core) on
//! loopback, with handlers for raw bytes (no generated code):
//!
//! - `/echo.Echo/Say` (unary): answers `ID:REQUEST`, with initial metadata `x-server: ID`
//!   and trailing metadata `x-trailer: t-ID`; the request `fail` is refused with
//!   `INVALID_ARGUMENT` ("told to fail") before anything else is sent (a Trailers-Only
//!   response);
//! - `/echo.Echo/Chat` (bidirectional streaming): answers each message with `ID:MESSAGE`;
//! - `/grpc.health.v1.Health/Check` (the gRPC health checking protocol): `SERVING` for
//!   the service `""` or `echo.Echo`, `NOT_SERVING` while the health file exists,
//!   `NOT_FOUND` for another service.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::peer::LoopbackPeer;
use crate::smtp::PYTHON;

const SERVER: &str = r#"
import os, sys
from concurrent import futures
import grpc

port, ident = sys.argv[1], sys.argv[2]
health_file = sys.argv[3] if len(sys.argv) > 3 else ""
raw = lambda b: b

def say(req, ctx):
    if req == b"fail":
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "told to fail")
    ctx.send_initial_metadata((("x-server", ident),))
    ctx.set_trailing_metadata((("x-trailer", "t-" + ident),))
    return ident.encode() + b":" + req

def chat(requests, ctx):
    for m in requests:
        yield ident.encode() + b":" + m

def check(req, ctx):
    # HealthCheckRequest { string service = 1; }
    service = b""
    if len(req) >= 2 and req[0] == 0x0A:
        service = req[2 : 2 + req[1]]
    if service not in (b"", b"echo.Echo"):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    serving = not (health_file and os.path.exists(health_file))
    # HealthCheckResponse { ServingStatus status = 1; } SERVING = 1, NOT_SERVING = 2
    return bytes([0x08, 1 if serving else 2])

server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((
    grpc.method_handlers_generic_handler("echo.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(say, raw, raw),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, raw, raw),
    }),
    grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check, raw, raw),
    }),
))
if server.add_insecure_port("127.0.0.1:" + port) == 0:
    sys.exit(1)
server.start()
server.wait_for_termination()
"#;

const CLIENT: &str = r#"
import sys
import grpc

target, count = sys.argv[1], int(sys.argv[2])
# No HTTP proxy from the environment: the target is on loopback.
ch = grpc.insecure_channel(target, options=(("grpc.enable_http_proxy", 0),))
grpc.channel_ready_future(ch).result(timeout=10)
say = ch.unary_unary("/echo.Echo/Say")
for i in range(count):
    resp, call = say.with_call(b"hello%d" % i, timeout=10)
    initial = dict(call.initial_metadata())
    trailing = dict(call.trailing_metadata())
    print("say", resp.decode(), initial.get("x-server"), trailing.get("x-trailer"), flush=True)
try:
    say(b"fail", timeout=10)
    print("fail no-error", flush=True)
except grpc.RpcError as e:
    print("fail", e.code().name, e.details(), flush=True)
chat = ch.stream_stream("/echo.Echo/Chat")
print("chat", " ".join(m.decode() for m in chat(iter([b"a", b"b", b"c"]), timeout=10)), flush=True)
"#;

/// True if Debian's python3 has grpcio. Otherwise prints a loud skip message and returns
/// false — except under `CI=true`, where it panics (`.ci/run` installs it).
pub fn available() -> bool {
    crate::smtp::python_has("grpc", "python3-grpcio")
}

/// A gRPC server (gRPC's C core, through Python) on `127.0.0.1:port`, answering as `ID`
/// (see the module); killed by PID and reaped when dropped.
#[derive(Debug)]
pub struct GrpcServer(LoopbackPeer);

impl GrpcServer {
    /// Starts one answering as `id` on a free loopback port and waits (at most 10 s a try,
    /// 3 tries) until it takes connections. With `health_file`, its health service says
    /// `NOT_SERVING` while that file exists.
    ///
    /// # Errors
    /// The spawn error, or [`io::ErrorKind::TimedOut`] when no port gave a listening server
    /// in 3 tries.
    pub fn start(id: &str, health_file: Option<&Path>) -> io::Result<Self> {
        let command = |port: u16| {
            let mut cmd = crate::command(PYTHON);
            cmd.args(["-c", SERVER, &port.to_string(), id]);
            if let Some(f) = health_file {
                cmd.arg(f);
            }
            cmd
        };
        let listening = |addr: SocketAddr| {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        };
        LoopbackPeer::start(
            "grpc server",
            3,
            Duration::from_secs(10),
            command,
            listening,
        )
        .map(Self)
    }

    /// Its address, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// Kills it (SIGKILL, by PID) and reaps it.
    pub fn stop(&mut self) {
        self.0.stop();
    }
}

/// Runs the gRPC client (gRPC's C core, through Python; at most 60 s) against `target`
/// over HTTP/2 in plain TCP: `count` `Say` calls on one channel, one that fails, one
/// `Chat` of three messages. Returns its output, one line per call:
///
/// ```text
/// say ID:hello0 ID t-ID
/// fail INVALID_ARGUMENT told to fail
/// chat ID:a ID:b ID:c
/// ```
///
/// # Errors
/// The spawn error, or the client's stderr when it failed (a call that errored otherwise
/// than as expected) or ran past 60 s.
pub fn client(target: SocketAddr, count: usize) -> io::Result<String> {
    let mut cmd = crate::command("timeout");
    cmd.args([
        "60",
        PYTHON,
        "-c",
        CLIENT,
        &target.to_string(),
        &count.to_string(),
    ]);
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "grpc client failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}
