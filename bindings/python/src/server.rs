//! `upcase.Server`: the core server, run on background threads.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use upcase::server::{Config, Mode, Server as Core, Stats, Transport};

use crate::errors::to_py;
use crate::{port_arg, timeout_arg};

/// A running core server: the thread that runs it and its end signal.
struct Running {
    thread: JoinHandle<upcase::Result<()>>,
    done: Arc<Done>,
}

/// Set by the server thread when `run` has returned.
#[derive(Default)]
struct Done {
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Done {
    fn set(&self) {
        if let Ok(mut f) = self.flag.lock() {
            *f = true;
        }
        self.cond.notify_all();
    }

    /// Waits up to `timeout`; true once set.
    fn wait(&self, timeout: Duration) -> bool {
        let Ok(f) = self.flag.lock() else { return true };
        match self.cond.wait_timeout_while(f, timeout, |done| !*done) {
            Ok((f, _)) => *f,
            Err(_) => true,
        }
    }
}

struct State {
    /// The bound core server; `None` once stopped (its socket closed, so
    /// new clients are refused at once), until `start` binds again.
    core: Option<Arc<Core>>,
    running: Option<Running>,
    /// Counters of the runs before the current core.
    earlier: Stats,
}

thread_local! {
    /// On a server thread while it runs an `on_client` callback: the id of
    /// that server (0 otherwise).
    static IN_CALLBACK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// `a + b`, counter by counter; `connections_active` is `b`'s (a gauge).
fn add_stats(a: &Stats, b: &Stats) -> Stats {
    Stats {
        connections_accepted: a.connections_accepted + b.connections_accepted,
        connections_active: b.connections_active,
        connections_rejected: a.connections_rejected + b.connections_rejected,
        bytes_in: a.bytes_in + b.bytes_in,
        bytes_out: a.bytes_out + b.bytes_out,
        datagrams_in: a.datagrams_in + b.datagrams_in,
        datagrams_out: a.datagrams_out + b.datagrams_out,
        datagrams_dropped: a.datagrams_dropped + b.datagrams_dropped,
        errors: a.errors + b.errors,
        idle_timeouts: a.idle_timeouts + b.idle_timeouts,
    }
}

/// Server(host="127.0.0.1", port=12000, *, transport="tcp", mode="concurrent", ...)
///
/// Binds on construction (port 0 picks a free port: see .port). serve_forever()
/// serves until Ctrl-C or stop(); start() serves on background threads and
/// returns; used as a context manager it starts on enter and stops on exit.
/// certfile and keyfile (PEM) serve TLS over TCP; client_cafile then
/// requires client certificates signed by its CAs; a client that has not
/// finished its handshake after tls_handshake_timeout seconds is closed.
#[pyclass(module = "upcase._upcase")]
pub(crate) struct Server {
    /// Unique per Server object: tells its own callbacks from another's.
    id: u64,
    config: Config,
    /// The address bound first; a restart binds the same one again.
    local: upcase::addr::SockAddr,
    state: Mutex<State>,
}

fn parse_transport(s: &str) -> PyResult<Transport> {
    match s {
        "tcp" => Ok(Transport::Tcp),
        "udp" => Ok(Transport::Udp),
        other => Err(PyValueError::new_err(format!("transport must be 'tcp' or 'udp', not {other:?}"))),
    }
}

fn parse_mode(s: &str) -> PyResult<Mode> {
    match s {
        "concurrent" => Ok(Mode::Concurrent),
        "iterative" => Ok(Mode::Iterative),
        other => Err(PyValueError::new_err(format!("mode must be 'concurrent' or 'iterative', not {other:?}"))),
    }
}

fn positive(v: i64, name: &str) -> PyResult<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| PyValueError::new_err(format!("{name} must be positive, not {v}")))
}

impl Server {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| PyRuntimeError::new_err("server state lock poisoned"))
    }

    /// Starts serving on a background thread; rebinds first if an earlier
    /// run was stopped (a stopped core server cannot run again). The state
    /// lock is never held while the interpreter is released, so a thread
    /// waiting for it with the interpreter held cannot deadlock with us.
    fn start_inner(&self, py: Python<'_>) -> PyResult<()> {
        let mut st = self.lock()?;
        if st.running.is_some() {
            return Err(PyRuntimeError::new_err("the server is already running"));
        }
        let stopped = st.core.as_ref().is_none_or(|c| c.is_stopped());
        if stopped {
            // A stopped core cannot run again: close its socket first, then
            // bind the same address and port anew, so .port stays true.
            if let Some(old) = st.core.take() {
                st.earlier = add_stats(&st.earlier, &old.stats());
            }
            let config = Config { port: self.local.port(), ..self.config.clone() };
            let core = Core::bind(config).map_err(|e| to_py(py, e))?;
            st.core = Some(Arc::new(core));
        }
        let Some(core) = st.core.as_ref().map(Arc::clone) else {
            return Err(PyRuntimeError::new_err("the server has no socket"));
        };
        let done = Arc::new(Done::default());
        let done2 = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("upcase-server".into())
            .spawn(move || {
                let r = core.run();
                done2.set();
                r
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start a server thread: {e}")))?;
        st.running = Some(Running { thread, done });
        Ok(())
    }

    /// Stops and joins, then closes the socket (keeping the counters);
    /// returns the run's result.
    fn stop_inner(&self, py: Python<'_>) -> PyResult<()> {
        let running = {
            let mut st = self.lock()?;
            if let Some(core) = &st.core {
                core.stop();
            }
            st.running.take()
        };
        let result = match running {
            None => Ok(Ok(())),
            // Called from a callback on a server thread: joining would wait
            // for this very thread. The run ends by itself once stopped;
            // let its thread go.
            Some(_) if IN_CALLBACK.with(|f| f.get()) == self.id => Ok(Ok(())),
            // The thread may be waiting for the interpreter (an on_client
            // callback): join with the interpreter released.
            Some(running) => py.detach(|| running.thread.join()),
        };
        {
            let mut st = self.lock()?;
            if st.running.is_none() {
                if let Some(core) = st.core.take() {
                    st.earlier = add_stats(&st.earlier, &core.stats());
                }
            }
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.code() == upcase::error::ERR_STOPPED => Ok(()),
            Ok(Err(e)) => Err(to_py(py, e)),
            Err(_) => Err(PyRuntimeError::new_err("the server thread panicked")),
        }
    }
}

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (host = "127.0.0.1", port = 12000, *, transport = "tcp", mode = "concurrent", threads = None,
                        max_connections = 16384, idle_timeout = Some(60.0), backlog = 1024, max_datagram = 65527,
                        on_client = None, defer_accept = false, min_rate = 1, io_uring = false,
                        max_connections_per_address = 1024, certfile = None, keyfile = None, client_cafile = None,
                        tls_handshake_timeout = 10.0),
           text_signature = "(host='127.0.0.1', port=12000, *, transport='tcp', mode='concurrent', threads=None, max_connections=16384, idle_timeout=60.0, backlog=1024, max_datagram=65527, on_client=None, defer_accept=False, min_rate=1, io_uring=False, max_connections_per_address=1024, certfile=None, keyfile=None, client_cafile=None, tls_handshake_timeout=10.0)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        port: i64,
        transport: &str,
        mode: &str,
        threads: Option<i64>,
        max_connections: i64,
        idle_timeout: Option<f64>,
        backlog: i64,
        max_datagram: i64,
        on_client: Option<Py<PyAny>>,
        defer_accept: bool,
        min_rate: i64,
        io_uring: bool,
        max_connections_per_address: i64,
        certfile: Option<PathBuf>,
        keyfile: Option<PathBuf>,
        client_cafile: Option<PathBuf>,
        tls_handshake_timeout: f64,
    ) -> PyResult<Server> {
        let port = port_arg(port)?;
        let transport = parse_transport(transport)?;
        let tls_handshake_timeout = match timeout_arg(Some(tls_handshake_timeout), "tls_handshake_timeout")? {
            Some(t) if !t.is_zero() => t,
            _ => return Err(PyValueError::new_err("tls_handshake_timeout must be positive")),
        };
        let tls = crate::tls::server_arg(py, certfile, keyfile, client_cafile, transport, io_uring)?;
        let mode = parse_mode(mode)?;
        let threads = match threads {
            None => 0,
            Some(n) => positive(n, "threads")?,
        };
        let idle_timeout = match timeout_arg(idle_timeout, "idle_timeout")? {
            Some(t) if t.is_zero() => return Err(PyValueError::new_err("idle_timeout must be positive or None")),
            t => t,
        };
        let min_rate = u32::try_from(min_rate)
            .ok()
            .filter(|&r| r <= upcase::server::MAX_MIN_RATE)
            .ok_or_else(|| PyValueError::new_err(format!("min_rate must be 0 to {}", upcase::server::MAX_MIN_RATE)))?;
        let backlog =
            i32::try_from(positive(backlog, "backlog")?).map_err(|_| PyValueError::new_err("backlog is too large"))?;
        if let Some(cb) = &on_client {
            if !cb.bind(py).is_callable() {
                return Err(pyo3::exceptions::PyTypeError::new_err("on_client must be callable"));
            }
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let on_client = on_client.map(|cb| {
            Arc::new(move |peer: &upcase::addr::SockAddr| {
                let host = peer.host_string();
                let port = peer.port();
                IN_CALLBACK.with(|f| f.set(id));
                Python::attach(|py| {
                    if let Err(e) = cb.call1(py, (host, port)) {
                        // Nobody to raise to on a server thread: report it
                        // the way Python reports errors in callbacks.
                        e.write_unraisable(py, Some(cb.bind(py)));
                    }
                });
                IN_CALLBACK.with(|f| f.set(0));
            }) as upcase::server::ClientCallback
        });
        // Every field is set; a field the core adds later keeps its default.
        #[allow(clippy::needless_update)]
        let config = Config {
            host: host.to_owned(),
            port,
            transport,
            mode,
            threads,
            max_connections: positive(max_connections, "max_connections")?,
            idle_timeout,
            min_rate,
            backlog,
            max_datagram: positive(max_datagram, "max_datagram")?,
            defer_accept,
            io_uring,
            max_connections_per_address: usize::try_from(max_connections_per_address)
                .map_err(|_| PyValueError::new_err("max_connections_per_address must be 0 (no limit) or more"))?,
            on_client,
            tls,
            tls_handshake_timeout,
            ..Config::default()
        };
        let core = py.detach(|| Core::bind(config.clone())).map_err(|e| to_py(py, e))?;
        let local = core.local_addr();
        Ok(Server {
            id,
            config,
            local,
            state: Mutex::new(State { core: Some(Arc::new(core)), running: None, earlier: Stats::default() }),
        })
    }

    /// The bound port (the one picked for port 0).
    #[getter]
    fn port(&self) -> u16 {
        self.local.port()
    }

    /// The bound address as (host, port).
    #[getter]
    fn address(&self) -> (String, u16) {
        (self.local.host_string(), self.local.port())
    }

    /// "tcp" or "udp".
    #[getter]
    fn transport(&self) -> &'static str {
        match self.config.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }

    /// True when serving TLS (certfile and keyfile given).
    #[getter]
    fn tls(&self) -> bool {
        self.config.tls.is_some()
    }

    /// "concurrent" or "iterative".
    #[getter]
    fn mode(&self) -> &'static str {
        match self.config.mode {
            Mode::Concurrent => "concurrent",
            Mode::Iterative => "iterative",
        }
    }

    /// True while serving.
    #[getter]
    fn running(&self) -> PyResult<bool> {
        Ok(self.lock()?.running.is_some())
    }

    /// start(): serve on background threads and return at once.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.start_inner(py)
    }

    /// stop(): stop serving (from any thread); waits for the server
    /// threads to finish and closes the socket, so new clients are refused.
    /// start() binds the same address and port again. Stopping a stopped
    /// server does nothing.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.stop_inner(py)
    }

    /// serve_forever(): serve until stop() (from another thread) or a
    /// signal; Ctrl-C stops the server and raises KeyboardInterrupt. Also
    /// inside `with server:`, where it waits on the run the block started.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        // Already serving (start(), or `with server:`): wait on that run.
        if self.lock()?.running.is_none() {
            self.start_inner(py)?;
        }
        let done = match &self.lock()?.running {
            Some(r) => Arc::clone(&r.done),
            None => return Ok(()),
        };
        loop {
            if py.detach(|| done.wait(Duration::from_millis(50))) {
                return self.stop_inner(py);
            }
            if let Err(e) = py.check_signals() {
                self.stop_inner(py)?;
                return Err(e);
            }
        }
    }

    /// stats(): the counters, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = {
            let st = self.lock()?;
            let now = st.core.as_ref().map(|c| c.stats()).unwrap_or_default();
            add_stats(&st.earlier, &now)
        };
        let d = PyDict::new(py);
        d.set_item("connections_accepted", s.connections_accepted)?;
        d.set_item("connections_active", s.connections_active)?;
        d.set_item("connections_rejected", s.connections_rejected)?;
        d.set_item("bytes_in", s.bytes_in)?;
        d.set_item("bytes_out", s.bytes_out)?;
        d.set_item("datagrams_in", s.datagrams_in)?;
        d.set_item("datagrams_out", s.datagrams_out)?;
        d.set_item("datagrams_dropped", s.datagrams_dropped)?;
        d.set_item("errors", s.errors)?;
        d.set_item("idle_timeouts", s.idle_timeouts)?;
        Ok(d)
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.borrow().start_inner(slf.py())?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.stop_inner(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> PyResult<String> {
        let st = self.lock()?;
        let state = if st.running.is_some() { "running" } else { "stopped" };
        Ok(format!("<upcase.Server {} {} on {} ({state})>", self.transport(), self.mode(), self.local))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The threads end by themselves once stopped; joining here could
        // wait for the interpreter this thread holds.
        if let Ok(st) = self.state.lock() {
            if let Some(core) = &st.core {
                core.stop();
            }
        }
    }
}
