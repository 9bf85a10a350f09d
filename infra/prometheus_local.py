"""A local Prometheus server scraping every process of the project, run in the background like Kafka and Prefect.

The binary is Debian's ``prometheus`` package (``apt-get install prometheus``: the server and ``promtool``, from the
distribution's signed archive, no download script; see the README, "Operators: live metrics"). `start` writes
``home/prometheus.yml`` from infra/prometheus/prometheus.yml, keeps its data in ``home/data`` and its pid in
``home/prometheus.pid``; processes announce themselves in ``home/targets`` (file-based discovery), the brokers'
JMX exporters in ``home/jmx-targets``. `stop` ends exactly what `start` began.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from alertdist.supervisor import Supervised, wait_ready

__all__ = [
    "CONFIG_TEMPLATE",
    "RULES_DIR",
    "PrometheusInfraError",
    "PrometheusServer",
    "binary",
    "monitor_status",
    "promtool",
    "query",
    "start",
    "start_monitor",
    "status",
    "stop",
    "stop_monitor",
]

INFRA_DIR = Path(__file__).resolve().parent
CONFIG_TEMPLATE = INFRA_DIR / "prometheus" / "prometheus.yml"
RULES_DIR = INFRA_DIR / "prometheus" / "rules"
INSTALL_HINT = "install it with `apt-get install prometheus` (Debian/Ubuntu: the server and promtool)"


class PrometheusInfraError(RuntimeError):
    """The local Prometheus could not be started, stopped or asked; the message says what to do next."""


@dataclass(frozen=True)
class PrometheusServer:
    home: Path
    port: int = 9090
    host: str = "127.0.0.1"
    scrape_interval_s: float = 5.0
    evaluation_interval_s: float = 5.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "prometheus.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "prometheus.log"

    @property
    def config_file(self) -> Path:
        return self.home / "prometheus.yml"

    @property
    def targets_dir(self) -> Path:
        """Where the project's processes announce their metrics address (file_sd JSON)."""
        return self.home / "targets"

    @property
    def jmx_targets_dir(self) -> Path:
        """Where the brokers' and MirrorMaker's JMX exporters are announced."""
        return self.home / "jmx-targets"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def process(self) -> Supervised:
        return Supervised("Prometheus", self.pid_file, ("prometheus",))

    @property
    def monitor(self) -> Supervised:
        """The lag monitor's process (a pid reused by another program is not ours)."""
        return Supervised("lag monitor", self.monitor_pid_file, ("alertdist",))

    @property
    def monitor_pid_file(self) -> Path:
        """The lag monitor (`alertdist lag serve`) started beside the server."""
        return self.home / "monitor.pid"

    @property
    def monitor_log_file(self) -> Path:
        return self.home / "monitor.log"


def binary(name: str = "prometheus") -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
    if found is None:
        raise PrometheusInfraError(f"{name} is not installed: {INSTALL_HINT}")
    return found


def promtool() -> str:
    return binary("promtool")


def _seconds(value: float) -> str:
    return f"{int(value * 1000)}ms"


def write_config(server: PrometheusServer) -> Path:
    """``home/prometheus.yml`` from the template: the folders and intervals of this server filled in."""
    server.home.mkdir(parents=True, exist_ok=True)
    server.targets_dir.mkdir(exist_ok=True)
    server.jmx_targets_dir.mkdir(exist_ok=True)
    text = CONFIG_TEMPLATE.read_text()
    for key, value in {
        "SCRAPE_INTERVAL": _seconds(server.scrape_interval_s),
        "EVALUATION_INTERVAL": _seconds(server.evaluation_interval_s),
        "RULES_DIR": str(RULES_DIR),
        "TARGETS_DIR": str(server.targets_dir),
        "JMX_TARGETS_DIR": str(server.jmx_targets_dir),
    }.items():
        text = text.replace("{{" + key + "}}", value)
    server.config_file.write_text(text)
    return server.config_file


def _ready(server: PrometheusServer, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{server.url}/-/ready", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def start(server: PrometheusServer, *, timeout: float = 60.0, log=print) -> str:
    """Start Prometheus unless ours is already running; wait until it is ready. Returns its address."""
    if server.process.pid() and _ready(server):
        write_config(server)  # the rules or folders may have changed: reload them
        reload(server)
        log(f"Prometheus already running at {server.url}")
        return server.url
    with socket.socket() as s:
        if s.connect_ex((server.host, server.port)) == 0:
            raise PrometheusInfraError(
                f"port {server.port} is taken by a process this project did not start; stop it or set "
                "ALERTDIST_PROMETHEUS_PORT"
            )
    config = write_config(server)
    check = subprocess.run([promtool(), "check", "config", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise PrometheusInfraError(f"promtool rejects {config}:\n{check.stdout[-2000:]}{check.stderr[-2000:]}")
    cmd = [
        binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={server.data_dir}",
        f"--web.listen-address={server.host}:{server.port}",
        "--web.enable-lifecycle",  # `start` on a running server reloads its configuration
        "--storage.tsdb.retention.time=15d",
    ]
    proc = server.process.start(cmd, log_file=server.log_file)
    log(f"Prometheus starting (pid {proc.pid}, log {server.log_file})")
    why = wait_ready(proc, lambda: _ready(server), timeout=timeout, log_file=server.log_file, interval=0.3)
    if why:
        raise PrometheusInfraError(f"Prometheus {why}")
    log(f"Prometheus at {server.url}")
    return server.url


def reload(server: PrometheusServer) -> None:
    request = urllib.request.Request(f"{server.url}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def stop(server: PrometheusServer, *, timeout: float = 30.0, log=print) -> None:
    server.process.stop(timeout=timeout, log=log)


def start_monitor(server: PrometheusServer, cmd: list[str], *, log=print) -> int:
    """Start the monitor process ``cmd`` in the background unless ours runs; returns its pid."""
    server.home.mkdir(parents=True, exist_ok=True)
    return server.monitor.ensure(cmd, log_file=server.monitor_log_file, log=log)


def stop_monitor(server: PrometheusServer, *, timeout: float = 30.0, log=print) -> None:
    server.monitor.stop(timeout=timeout, log=log)


def monitor_status(server: PrometheusServer) -> str:
    return server.monitor.status()


def status(server: PrometheusServer) -> str:
    pid = server.process.pid()
    if _ready(server):
        return f"Prometheus up at {server.url} (pid {pid or 'not ours'})"
    return f"Prometheus down{f' (pid {pid} not ready)' if pid else ''}"


def query(server_url: str, promql: str, *, timeout: float = 10.0) -> list[dict]:
    """An instant query through the HTTP API; the result vector (``[{"metric": {...}, "value": [t, "v"]}]``)."""
    url = f"{server_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise PrometheusInfraError(f"query {promql!r} failed: {body.get('error')}")
    return body["data"]["result"]


def alerts(server_url: str, *, timeout: float = 10.0) -> list[dict]:
    """The alerts Prometheus holds now (pending and firing)."""
    with urllib.request.urlopen(f"{server_url}/api/v1/alerts", timeout=timeout) as response:
        return json.load(response)["data"]["alerts"]
