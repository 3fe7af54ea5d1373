//! `oxy::bootstrap`: CLI -> settings -> inherited sockets -> restart launcher -> seccomp
//! -> logs and spans -> runtime -> start -> bind (or take over a predecessor's sockets)
//! -> drop privileges -> serve -> drain (on SIGTERM/SIGINT, or after handing over to a
//! successor).

use crate::app::{AppServerSettings, OxyApp, OxyExt};
use crate::cli::Cli;
use crate::dns::DnsResolver;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::error::{OxyError, OxyResult};
use crate::offramp::policy::EgressPolicy;
use crate::onramp::bind::{BoundSocket, bind_endpoint, bind_tcp};
use crate::per_thread::PerThreadRuntimes;
use crate::restart::handover::{HANDED_OVER_KEY, HandoverSockets, Successor, forward_key};
use crate::restart::inherited::Inherited;
use crate::restart::launcher::Launcher;
use crate::restart::{control, socket_key};
use crate::services::Services;
use crate::settings::{
    self, ConfigError, ConfigErrors, IpOffRamp, PathSegment, Scheduling, ServerSettings,
    SettingError, TunSettings,
};
use crate::telemetry::audit::AuditLog;
use crate::telemetry::framework_metrics::oxy;
use crate::telemetry::health::{Health, HealthState};
use crate::telemetry::listeners::{BoundListener, EndpointListeners, Listeners};
use crate::telemetry::{logging, panics, sentry_reports};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Runs the application `App`: parses the command line, loads and validates the
/// settings, sets up telemetry, starts the app, binds every endpoint and serves until
/// SIGTERM or SIGINT, then drains within `server.shutdown_timeout`.
///
/// Returns `Ok(())` after a clean shutdown (and for `--generate-config` and a passing
/// `--check-config`). On failure it prints the error to stderr and exits the process
/// with code 2 for bad settings or usage, 1 for anything else.
pub fn bootstrap<App: OxyApp>() -> OxyResult<()> {
    let cli = Cli::parse_for(App::name(), App::version(), App::description());
    match run::<App>(cli) {
        Ok(()) => Ok(()),
        Err(OxyError::Config(errors)) => {
            eprintln!("{}: invalid settings:\n{errors}", App::name());
            std::process::exit(2)
        }
        Err(e) => {
            tracing::error!(error = %e, "{} stopped", App::name());
            eprintln!("{}: {e}", App::name());
            std::process::exit(e.exit_code())
        }
    }
}

fn run<App: OxyApp>(cli: Cli) -> OxyResult<()> {
    if cli.generate_config {
        let yaml = generate_config::<App>()
            .map_err(|e| OxyError::Io(std::io::Error::other(e.to_string())))?;
        use std::io::Write;
        std::io::stdout().write_all(yaml.as_bytes())?;
        return Ok(());
    }
    let Some(path) = cli.config else {
        // clap already requires --config without --generate-config.
        return Err(OxyError::Setup(
            "no settings file: use --config FILE".into(),
        ));
    };
    let settings: AppServerSettings<App> = settings::load_file(&path)?;
    let contexts = app_contexts::<App>(&settings, &path)?;
    if cli.check_config {
        for warning in settings::open_proxy_warnings(&settings.endpoints) {
            eprintln!(
                "warning: {warning} (unless the application's request hook authenticates clients)"
            );
        }
        eprintln!("{}: settings are valid", path.display());
        return Ok(());
    }

    if cli.restart {
        return ask_restart(&settings.server.control_socket);
    }

    let inherited = Inherited::from_env();
    // Before the filter: the launcher is the one thread that may start a successor.
    let launcher = Launcher::start()?;
    // Every thread started from here on (the runtime's, the span exporter's, Sentry's)
    // inherits the filter.
    let seccomp_reports = crate::security::seccomp::install(&settings.security)
        .map_err(|e| OxyError::Setup(format!("security.seccomp: {e}")))?;
    logging::init(
        &settings.telemetry.log,
        &settings.telemetry.tracing,
        App::name(),
    )?;
    panics::install_hook();
    let process = Process {
        inherited,
        launcher,
        seccomp_reports,
    };
    let _sentry = sentry_reports::init(&settings.telemetry.sentry, App::name(), App::version());
    raise_open_files_limit();

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name(App::name());
    if settings.server.worker_threads > 0 {
        runtime.worker_threads(settings.server.worker_threads);
    }
    let runtime = runtime.build()?;
    let per_thread = match settings.server.scheduling {
        Scheduling::WorkStealing => None,
        Scheduling::PerThread => {
            let threads = match settings.server.worker_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            };
            Some(PerThreadRuntimes::start(threads, App::name())?)
        }
    };
    let result = runtime.block_on(serve::<App>(
        settings,
        contexts,
        process,
        per_thread.as_ref(),
    ));
    if let Some(per_thread) = per_thread {
        per_thread.stop();
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// `--restart`: asks the process behind `server.control_socket` to restart, and says how
/// it went.
fn ask_restart(control_socket: &std::path::Path) -> OxyResult<()> {
    if control_socket.as_os_str().is_empty() {
        return Err(OxyError::Setup(
            "--restart needs server.control_socket in the settings (or send SIGHUP)".into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(control::request_restart(control_socket)) {
        Ok(pid) => {
            use std::io::Write;
            writeln!(
                std::io::stdout(),
                "restarted: the successor (pid {pid}) serves"
            )?;
            Ok(())
        }
        Err(reason) => Err(OxyError::Setup(format!("restart failed: {reason}"))),
    }
}

/// What the process set up before its runtime: what a predecessor handed over, the
/// launcher for a successor, and the seccomp report pipe.
struct Process {
    inherited: Inherited,
    launcher: Launcher,
    seccomp_reports: Option<std::os::fd::OwnedFd>,
}

/// What the application makes from its settings, once: [`OxyApp::app_context`] and each
/// endpoint's [`OxyApp::endpoint_context`], their problems all at once.
type AppContexts<App> = (
    <App as OxyExt>::AppContext,
    Vec<<App as OxyExt>::EndpointContext>,
);

/// The application's own checks of its settings, which make its contexts. Its problems
/// are reported like the framework's: at their YAML path (a [`SettingError`]'s, within
/// the section the application was given), with the line and column in `path`.
fn app_contexts<App: OxyApp>(
    settings: &AppServerSettings<App>,
    path: &std::path::Path,
) -> OxyResult<AppContexts<App>> {
    let mut problems: Vec<(Vec<PathSegment>, String)> = Vec::new();
    let mut report =
        |section: Vec<PathSegment>, e: anyhow::Error| match e.downcast::<SettingError>() {
            Ok(problem) => problems.push(([section, problem.path].concat(), problem.message)),
            Err(e) => problems.push((section, format!("{e:#}"))),
        };
    let app = App::app_context(settings)
        .map_err(|e| report(vec![PathSegment::Key("app".into())], e))
        .ok();
    let mut endpoints = Vec::new();
    for (i, endpoint) in settings.endpoints.iter().enumerate() {
        match App::endpoint_context(endpoint) {
            Ok(context) => endpoints.push(context),
            Err(e) => {
                let key = |k: &str| PathSegment::Key(k.into());
                report(vec![key("endpoints"), PathSegment::Index(i), key("app")], e);
            }
        }
    }
    if let Some(app) = app
        && problems.is_empty()
    {
        return Ok((app, endpoints));
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|(at, message)| ConfigError {
            location: settings::location::locate(&text, &at),
            path: settings::display_path(&at),
            message,
        })
        .collect();
    errors.sort_by_key(|e| e.location);
    Err(OxyError::Config(ConfigErrors {
        source_name: path.display().to_string(),
        errors,
    }))
}

/// Raises the soft limit on open files to the hard limit: every connection and tunnel
/// holds sockets, and the usual soft limit (1024) is far below what a proxy serves.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(limit = ?limit.maximum, "raised the open files limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
        }
    }
}

/// The default settings of `App` as documented YAML.
pub fn generate_config<App: OxyApp>() -> Result<String, serde_yaml::Error> {
    let defaults = ServerSettings::<App::AppSettings, App::EndpointAppSettings>::default();
    let body = settings::to_documented_yaml(&defaults)?;
    Ok(format!(
        "# Settings for {} {}: {}\n# Generated by `{} --generate-config`; every option is shown with its default.\n\n{body}",
        App::name(),
        App::version(),
        App::description(),
        App::name(),
    ))
}

async fn serve<App: OxyApp>(
    settings: AppServerSettings<App>,
    (app_context, endpoint_contexts): AppContexts<App>,
    mut process: Process,
    per_thread: Option<&PerThreadRuntimes>,
) -> OxyResult<()> {
    let started = Instant::now();
    if let Some(reports) = process.seccomp_reports.take() {
        tokio::spawn(crate::security::seccomp::report_violations(reports));
    }
    let drain = Drain::new();
    // Signals first: a SIGHUP or SIGTERM sent as soon as the pid file names this process
    // must not find the default action (which ends the process).
    let mut signals = Signals::new()?;
    match process.inherited.take(HANDED_OVER_KEY) {
        Some(fd) => {
            let drain = drain.clone();
            tokio::spawn(async move {
                crate::restart::inherited::wait_closed(fd).await;
                drain.set_devices_ours();
            });
        }
        None => drain.set_devices_ours(),
    }
    let mut handover = HandoverSockets::default();
    let inherited = &mut process.inherited;
    oxy::build_info(env!("CARGO_PKG_VERSION"), App::name(), App::version()).set(1);
    oxy::panics_total();
    register_process_metrics();
    let health = Arc::new(Health::default());
    health.set(HealthState::Starting);

    let listeners = Arc::new(Listeners::default());
    if settings.telemetry.enabled {
        let telemetry = &settings.telemetry;
        let key = socket_key("telemetry", "tcp", 0, telemetry.listen);
        let listener = (inherited.take_or(&key, || bind_tcp(telemetry.listen)))
            .and_then(|l| {
                handover.add(key, &l)?;
                TcpListener::from_std(l)
            })
            .map_err(|source| OxyError::Bind {
                endpoint: "telemetry".into(),
                addr: telemetry.listen,
                source,
            })?;
        let local = listener.local_addr()?;
        tracing::info!(listen = %local, "telemetry listening");
        write_address_file(&telemetry.address_file, local)?;
        let (stop, health, listeners) = (drain.clone(), health.clone(), listeners.clone());
        let profiling = Arc::new(telemetry.profiling.clone());
        crate::telemetry::profiling::start(&profiling).await;
        drain.spawn_until_handed_over(async move {
            let stop = stop.handed_over();
            crate::telemetry::server::serve(listener, health, listeners, started, profiling, stop)
                .await
        });
    }

    let hooks = App::start(settings.clone(), app_context)
        .await
        .map_err(OxyError::AppStart)?;
    if hooks.http_request.is_none() {
        for warning in settings::open_proxy_warnings(&settings.endpoints) {
            tracing::warn!("{warning}");
        }
    }
    let resolver = DnsResolver::new(&settings.dns, hooks.dns.clone())
        .map_err(|e| OxyError::Setup(e.to_string()))?;
    let (audit, audit_writer) = AuditLog::open(&settings.telemetry.audit)
        .await
        .map_err(|e| {
            OxyError::Io(std::io::Error::new(
                e.kind(),
                format!("audit log {}: {e}", settings.telemetry.audit.path.display()),
            ))
        })?;
    let services = Arc::new(Services {
        hooks,
        resolver: Arc::new(resolver),
        policy: EgressPolicy::new(&settings.egress),
        happy_eyeballs: settings.egress.happy_eyeballs.clone(),
        audit,
    });
    let mut bound = Vec::new();
    let mut reported = Vec::new();
    for (endpoint_settings, app) in settings.endpoints.iter().zip(endpoint_contexts) {
        let name = &endpoint_settings.name;
        let sockets = bind_endpoint(endpoint_settings, inherited).map_err(|e| OxyError::Bind {
            endpoint: name.clone(),
            addr: e.addr,
            source: e.source,
        })?;
        let h3_port = match sockets.quic.first() {
            Some((_, socket)) => Some(socket.local_addr()?.port()),
            None => None,
        };
        let mut endpoint =
            Endpoint::<App>::new(endpoint_settings.clone(), app, h3_port).map_err(|e| {
                OxyError::Setup(format!("endpoint {name}: {}.{}: {e}", e.section, e.field))
            })?;
        let tun_error =
            |e: std::io::Error| OxyError::Setup(format!("endpoint {name}: ip.tun: {e}"));
        if endpoint_settings.ip.offramp == IpOffRamp::Tun && !endpoint_settings.protocol.is_tun() {
            let key = format!("{name}/tun-offramp");
            let settings = offramp_tun_settings(endpoint_settings);
            let device = tun_device(key, &settings, inherited, &mut handover)
                .await
                .map_err(tun_error)?;
            let tun = crate::offramp::tun::TunOffRamp::start(device, name, drain.clone());
            endpoint.tun_offramp = Some(Arc::new(tun));
        }
        let endpoint = Arc::new(endpoint);
        // The endpoint's tasks share its services, with its own egress policy.
        let endpoint_services = Arc::new(services.for_endpoint(&endpoint_settings.egress));
        let max = endpoint_settings.limits.max_connections;
        let slots = (max > 0).then(|| Arc::new(Semaphore::new(max)));
        let mut report = EndpointListeners {
            name: name.clone(),
            protocol: endpoint_settings.protocol.as_str(),
            listeners: Vec::new(),
        };
        for (key, socket) in sockets.listen {
            match &socket {
                BoundSocket::Tcp(l) => handover.add(key, l)?,
                BoundSocket::Udp(s) => handover.add(key, s)?,
            }
            let (listener, transport, local) = match socket {
                BoundSocket::Tcp(l) => {
                    let local = l.local_addr()?;
                    (Listener::Tcp(TcpListener::from_std(l)?), "tcp", local)
                }
                BoundSocket::Udp(s) => {
                    let local = s.local_addr()?;
                    let socket = tokio::net::UdpSocket::from_std(s)?;
                    (Listener::Udp(socket), "udp", local)
                }
            };
            tracing::info!(endpoint = %name, listen = %local, transport, "endpoint listening");
            report.listeners.push(BoundListener {
                transport,
                address: local,
                device: None,
            });
            bound.push((
                listener,
                endpoint.clone(),
                slots.clone(),
                endpoint_services.clone(),
            ));
        }
        if endpoint_settings.protocol.is_tun() {
            let key = format!("{name}/tun");
            let device = tun_device(key, &endpoint_settings.ip.tun, inherited, &mut handover)
                .await
                .map_err(tun_error)?;
            let device_name = device.name().unwrap_or_default();
            tracing::info!(endpoint = %name, device = %device_name, "endpoint reading its TUN device");
            report.listeners.push(BoundListener {
                transport: "tun",
                address: SocketAddr::new(
                    endpoint_settings.ip.tun.addresses.first().map_or(
                        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                        |net| net.addr(),
                    ),
                    0,
                ),
                device: Some(device_name),
            });
            bound.push((
                Listener::Tun(device),
                endpoint.clone(),
                slots.clone(),
                endpoint_services.clone(),
            ));
        }
        for (key, socket) in sockets.quic {
            let local = socket.local_addr()?;
            let predecessor = inherited.take(&forward_key(&key));
            let (quic, shared) = crate::onramp::quic::bind(&endpoint, socket, predecessor)
                .map_err(|source| OxyError::Bind {
                    endpoint: name.clone(),
                    addr: local,
                    source,
                })?;
            handover.add_quic(key, shared)?;
            tracing::info!(endpoint = %name, listen = %local, transport = "quic", "endpoint listening (HTTP/3)");
            report.listeners.push(BoundListener {
                transport: "quic",
                address: local,
                device: None,
            });
            bound.push((
                Listener::Quic(quic),
                endpoint.clone(),
                slots.clone(),
                endpoint_services.clone(),
            ));
        }
        reported.push(report);
    }
    listeners.set(&reported);
    // One balance for every TCP listener: a thread's TCP connections (and the tunnels
    // and upgrades they start) are counted together.
    let balance = per_thread.and_then(PerThreadRuntimes::balance);
    for (listener, endpoint, slots, services) in bound {
        let drain = drain.clone();
        match listener {
            Listener::Tcp(l) => match per_thread {
                None => tokio::spawn(crate::onramp::tcp::serve(
                    l, endpoint, slots, services, drain, None,
                )),
                Some(runtimes) => {
                    runtimes.serve_tcp(l.into_std()?, |l| {
                        let (endpoint, slots) = (endpoint.clone(), slots.clone());
                        let (services, drain) = (services.clone(), drain.clone());
                        let balance = balance.clone();
                        crate::onramp::tcp::serve(l, endpoint, slots, services, drain, balance)
                    })?;
                    continue;
                }
            },
            Listener::Udp(s) => tokio::spawn(crate::onramp::udp::serve(
                s, endpoint, slots, services, drain,
            )),
            Listener::Quic(q) => tokio::spawn(crate::onramp::quic::serve(
                q, endpoint, slots, services, drain,
            )),
            Listener::Tun(device) => {
                tokio::spawn(crate::onramp::tun::serve(device, endpoint, services, drain))
            }
        };
    }
    let (restarts, mut restart_requests) = tokio::sync::mpsc::channel(4);
    if !settings.server.control_socket.as_os_str().is_empty() {
        let path = &settings.server.control_socket;
        let key = format!("control/{}", path.display());
        let listener = (inherited.take_or(&key, || control::bind(path)))
            .and_then(|l| {
                handover.add(key, &l)?;
                tokio::net::UnixListener::from_std(l)
            })
            .map_err(|e| {
                OxyError::Setup(format!("server.control_socket {}: {e}", path.display()))
            })?;
        let drain = drain.clone();
        let served = drain.clone();
        served.spawn_until_handed_over(
            async move { control::serve(listener, restarts, drain).await },
        );
    }
    process.inherited.close_unused();
    crate::security::privileges::drop_privileges(&settings.security)
        .map_err(|e| OxyError::Setup(format!("security: {e}")))?;
    health.set(HealthState::Ready);
    write_pid_file(&settings.server.pid_file)?;
    process.inherited.report_ready();
    tracing::info!(app = App::name(), version = App::version(), "ready");

    // The signal that stopped the process, or `None` after handing over to a successor.
    let signal = loop {
        let answer = tokio::select! {
            signal = shutdown(&mut signals.term, &mut signals.int) => break Some(signal),
            _ = signals.hangup.recv() => None,
            Some(answer) = restart_requests.recv() => Some(answer),
        };
        // A SIGTERM during a restart stops it (and the successor) and this process.
        let outcome = tokio::select! {
            outcome = restart(&process.launcher, &handover, &settings.server, &drain) => outcome,
            signal = shutdown(&mut signals.term, &mut signals.int) => {
                if let Some(answer) = answer {
                    let _ = answer.send(Err(format!("{signal} arrived; the process is stopping")));
                }
                break Some(signal);
            }
        };
        let answered = outcome
            .as_ref()
            .map(|successor| successor.pid)
            .map_err(String::clone);
        if let Some(answer) = answer {
            let _ = answer.send(answered.clone());
        }
        match outcome {
            Ok(successor) => {
                drop(successor.handed_over);
                // Restarts asked meanwhile are answered by this one.
                restart_requests.close();
                while let Ok(answer) = restart_requests.try_recv() {
                    let _ = answer.send(answered.clone());
                }
                break None;
            }
            // A successor that wrote the pid file and then failed: the file names this
            // process again (a failure to write it is logged: this process serves on).
            Err(_) => {
                if let Err(e) = write_pid_file(&settings.server.pid_file) {
                    tracing::error!(error = %e, "the pid file could not be restored");
                }
            }
        }
    };
    // The copies kept for a successor go too: a listener whose accept loop stops is then
    // closed, and new connections are refused at once rather than left in its backlog.
    drop(handover);
    // No restart from here on: one asked on the control socket is told so at once.
    restart_requests.close();
    while let Ok(answer) = restart_requests.try_recv() {
        let _ = answer.send(Err("this process is stopping".into()));
    }
    health.set(HealthState::Draining);
    let timeout = settings.server.shutdown_timeout;
    match signal {
        Some(signal) => tracing::info!(%signal, ?timeout, "shutting down: draining connections"),
        None => tracing::info!(?timeout, "restarted: draining connections"),
    }
    let cut = drain.drain(timeout).await;
    if cut > 0 {
        tracing::warn!(
            connections = cut,
            "drain period over; closed open connections"
        );
    }
    drop(services);
    if let Some(writer) = audit_writer
        && writer.await.is_err()
    {
        tracing::error!("the audit writer ended abnormally");
    }
    crate::telemetry::distributed_tracing::flush();
    tracing::info!("stopped");
    Ok(())
}

/// Starts a successor and waits for it (`restart::handover`), logging and counting the
/// outcome: the successor's process id, or why this process goes on serving. Once the
/// successor is ready, this process stops serving telemetry and control (`drain`'s hand
/// over) before the restart is reported done: whoever asks them after the report
/// reaches the successor.
async fn restart(
    launcher: &Launcher,
    handover: &HandoverSockets,
    server: &crate::settings::ServerSection,
    drain: &Drain,
) -> Result<Successor, String> {
    tracing::info!("restart: starting a successor");
    match crate::restart::handover::restart(launcher, handover, server.restart_timeout).await {
        Ok(successor) => {
            drain.hand_over().await;
            crate::telemetry::framework_metrics::oxy_restarts::total("succeeded").inc();
            tracing::info!(successor_pid = successor.pid, "restart: successor ready");
            Ok(successor)
        }
        Err(reason) => {
            crate::telemetry::framework_metrics::oxy_restarts::total("failed").inc();
            tracing::error!(%reason, "restart failed");
            Err(reason)
        }
    }
}

/// Writes this process's id to `path` (when set), whole: written aside, then renamed.
fn write_pid_file(path: &std::path::Path) -> OxyResult<()> {
    write_whole(path, &format!("{}\n", std::process::id())).map_err(|e| {
        OxyError::Io(std::io::Error::new(
            e.kind(),
            format!("server.pid_file {}: {e}", path.display()),
        ))
    })
}

/// Writes `text` to `path` (when set) whole or not at all: a temporary file renamed into
/// place.
fn write_whole(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, path))
}

/// Writes the telemetry listener's bound address to `path` (when set), whole or not at
/// all: a temporary file renamed into place.
fn write_address_file(path: &std::path::Path, addr: SocketAddr) -> OxyResult<()> {
    write_whole(path, &format!("{addr}\n")).map_err(|e| {
        OxyError::Io(std::io::Error::new(
            e.kind(),
            format!("telemetry.address_file {}: {e}", path.display()),
        ))
    })
}

/// The TUN device a predecessor handed over under `key`, else a new one made as
/// `settings` say; kept for a successor either way.
async fn tun_device(
    key: String,
    settings: &TunSettings,
    inherited: &mut Inherited,
    handover: &mut HandoverSockets,
) -> std::io::Result<Arc<tun_rs::AsyncDevice>> {
    let device = match inherited.take(&key) {
        Some(fd) => crate::tun_device::adopt(fd)?,
        None => crate::tun_device::open(settings).await?,
    };
    handover.add(key, &crate::tun_device::descriptor(&device))?;
    Ok(device)
}

/// A bound listening socket.
enum Listener {
    Tcp(TcpListener),
    Udp(tokio::net::UdpSocket),
    /// QUIC (HTTP/3) on a UDP socket.
    Quic(quinn::Endpoint),
    /// A TUN device (`protocol: tun`).
    Tun(Arc<tun_rs::AsyncDevice>),
}

/// The TUN off-ramp's device settings, with routes added for the address pools its
/// own addresses do not cover, so that replies to clients come back to the device.
fn offramp_tun_settings<E>(endpoint: &crate::settings::EndpointSettings<E>) -> TunSettings {
    let mut tun = endpoint.ip.tun.clone();
    let pools = [endpoint.ip.ipv4_pool, endpoint.ip.ipv6_pool];
    for pool in pools.into_iter().flatten() {
        let covered = tun.addresses.iter().any(|net| net.trunc().contains(&pool));
        if !covered && !tun.routes.contains(&pool) {
            tun.routes.push(pool);
        }
    }
    tun
}

fn register_process_metrics() {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = crate::telemetry::metrics::registry().register(Box::new(collector)) {
        tracing::debug!(error = %e, "process metrics not registered");
    }
}

/// The signals the serving process acts on, registered before it reports ready.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> OxyResult<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            hangup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// Waits for SIGTERM (`term`) or SIGINT (`int`) and names the one that came.
async fn shutdown(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
