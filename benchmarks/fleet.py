"""A fleet of N simulated hosts running ``apt-get update`` while the channels change.

Each host does what apt does on every update: a conditional GET of
``dists/<ch>/InRelease`` (``If-Modified-Since`` with the ``Last-Modified`` it last
got), and, when InRelease changed, the ``Packages.gz`` and ``pins`` named in it
through ``by-hash`` (checking each SHA-256 and size); 5% of the hosts then download
one pool file of their channel (checking its SHA-256 against ``Packages``).  Hosts
send their channel's read token with HTTP Basic, as apt does from ``auth.conf.d``.

Meanwhile a publisher publishes a new version into ``bench`` and promotes it to
``stage`` (``aptship publish`` / ``aptship promote`` subprocesses), back to back,
and records each InRelease it made visible, in order.  A host is *stale* when an
update returns an InRelease older than the newest one recorded before that update
started (a 304 counts as the copy it already holds).  After the rounds, publishing
stops and every host updates once more: that round must leave every host on the
last publish.

Targets (``--fleet-targets``): (a) one ``aptship serve``, (b) two replicas (one
worker each) on the same repository behind an nginx load balancer, (c) the nginx
front (``conf/nginx/aptship.conf``).  Load is bounded: ``--fleet-concurrency``
client threads with one keep-alive connection each, loopback only, a fixed number
of rounds.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import queue
import random
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import debgen
from benchmarks.common import APTSHIP, BenchError, free_port
from benchmarks.drivers import BENCH, STAGE, AptshipDriver

CHANNELS = (BENCH, STAGE)
TOKENS_PER_CHANNEL = 10
DOWNLOAD_SHARE = 0.05
ARCH = "amd64"
MAX_ERROR_SAMPLES = 10
_SHA256_LINE = re.compile(r"^ ([0-9a-f]{64})\s+(\d+)\s+(\S+)$")


# -- what the publisher made visible ---------------------------------------------------
class Published:
    """Per channel: the SHA-256 of every InRelease published, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._order: dict[str, list[str]] = {ch: [] for ch in CHANNELS}
        self._index: dict[str, dict[str, int]] = {ch: {} for ch in CHANNELS}
        self.count = 0

    def record(self, channel: str, inrelease: bytes) -> None:
        digest = hashlib.sha256(inrelease).hexdigest()
        with self._lock:
            if digest not in self._index[channel]:
                self._index[channel][digest] = len(self._order[channel])
                self._order[channel].append(digest)

    def latest(self, channel: str) -> int:
        with self._lock:
            return len(self._order[channel]) - 1

    def seq(self, channel: str, inrelease: bytes) -> int | None:
        """The position of this InRelease, or None if not recorded (yet)."""
        digest = hashlib.sha256(inrelease).hexdigest()
        with self._lock:
            return self._index[channel].get(digest)


class Publisher(threading.Thread):
    """Publish a new version into bench, promote it to stage, record, repeat."""

    def __init__(self, driver: AptshipDriver, published: Published, debs: Path) -> None:
        super().__init__(daemon=True)
        self.driver = driver
        self.published = published
        self.debs = debs
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.version = 100
        self.publishes = 0

    def snapshot(self) -> None:
        for ch in CHANNELS:
            path = self.driver.served_dir() / "dists" / ch / "InRelease"
            self.published.record(ch, path.read_bytes())

    def step(self, index: int) -> None:
        self.version += 1
        deb = debgen.extra_deb(self.debs, index, self.version)
        package, version, _ = deb.name.split("_")
        for args in (
            ("publish", "--channel", BENCH, str(deb)),
            ("promote", f"{package}={version}", "--from", BENCH, "--to", STAGE),
        ):
            proc = subprocess.run(
                self.driver.cli(*args),
                env=self.driver.env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if proc.returncode != 0:
                self.errors.append(f"aptship {args[0]}: {proc.stderr.strip()[-300:]}")
            self.snapshot()
        self.publishes += 1

    def run(self) -> None:
        index = 0
        while not self.stop_event.is_set():
            self.step(index % 20)
            index += 1


# -- the hosts -------------------------------------------------------------------------
@dataclass
class Host:
    ident: int
    channel: str
    auth: str
    downloads: bool
    inrelease: bytes | None = None
    last_modified: str | None = None
    pool: list[tuple[str, str]] = field(default_factory=list)  # (Filename, SHA256)


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    not_modified: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    mismatches: int = 0
    stale_hosts: set[int] = field(default_factory=set)
    mismatch_hosts: set[int] = field(default_factory=set)
    downloads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors += 1
            if len(self.error_samples) < MAX_ERROR_SAMPLES:
                self.error_samples.append(text[:300])


class Client:
    """One keep-alive HTTP/1.1 connection to a loopback server, reopened on failure."""

    def __init__(self, base: str, stats: Stats) -> None:
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", base)
        if match is None:
            raise BenchError(f"refusing to load-test anything but 127.0.0.1: {base}")
        self.port = int(match.group(1))
        self.stats = stats
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):  # a keep-alive connection the server closed: reopen once
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            start = time.perf_counter()
            try:
                self.conn.request("GET", path, headers=headers)
                resp = self.conn.getresponse()
                body = resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - start
            with self.stats.lock:
                self.stats.latencies.append(elapsed)
                self.stats.requests += 1
            if resp.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def release_sha256(inrelease: bytes) -> dict[str, tuple[str, int]]:
    """path -> (sha256, size) from the SHA256 field of a (clear-signed) Release."""
    out: dict[str, tuple[str, int]] = {}
    inside = False
    for line in inrelease.decode("utf-8", "replace").splitlines():
        if line.startswith("SHA256:"):
            inside = True
            continue
        if inside:
            match = _SHA256_LINE.match(line)
            if match is None:
                break
            out[match.group(3)] = (match.group(1), int(match.group(2)))
    return out


def pool_entries(packages: bytes) -> list[tuple[str, str]]:
    entries, filename, sha = [], None, None
    for line in [*packages.decode("utf-8", "replace").splitlines(), ""]:
        if line.startswith("Filename: "):
            filename = line.split(": ", 1)[1]
        elif line.startswith("SHA256: "):
            sha = line.split(": ", 1)[1]
        elif not line and filename and sha:
            entries.append((filename, sha))
            filename = sha = None
    return entries


_PARSED: dict[str, list[tuple[str, str]]] = {}
_PARSED_LOCK = threading.Lock()


def parsed_pool(sha: str, fetched: dict[str, bytes]) -> list[tuple[str, str]]:
    """The pool entries of a verified Packages.gz, parsed once per hash for all hosts
    (the client shares the CPUs with the servers it measures)."""
    with _PARSED_LOCK:
        hit = _PARSED.get(sha)
    if hit is None:
        hit = pool_entries(gzip.decompress(fetched[f"main/binary-{ARCH}/Packages.gz"]))
        with _PARSED_LOCK:
            _PARSED[sha] = hit
    return hit


def update(host: Host, client: Client, published: Published, stats: Stats) -> None:
    """One ``apt-get update`` (plus a pool download for 5% of the hosts)."""
    ch = host.channel
    newest_before = published.latest(ch)
    headers = {"Authorization": host.auth}
    if host.last_modified:
        headers["If-Modified-Since"] = host.last_modified
    status, got, body = client.get(f"/dists/{ch}/InRelease", headers)
    if status == 304 and host.inrelease is not None:
        with stats.lock:
            stats.not_modified += 1
        current = host.inrelease
    elif status == 200:
        current = body
        host.last_modified = got.get("last-modified")
    else:
        stats.error(f"host {host.ident}: InRelease {status} {body[:100]!r}")
        return
    seq = published.seq(ch, current)
    if seq is not None and seq < newest_before:
        with stats.lock:
            stats.stale_hosts.add(host.ident)
    auth = {"Authorization": host.auth}
    if current != host.inrelease:
        files = release_sha256(current)
        fetched: dict[str, bytes] = {}
        for name in (f"main/binary-{ARCH}/Packages.gz", "main/pins"):
            if name not in files:
                stats.error(f"host {host.ident}: {name} not in InRelease")
                return
            sha, size = files[name]
            directory = name.rsplit("/", 1)[0]
            status, _, data = client.get(f"/dists/{ch}/{directory}/by-hash/SHA256/{sha}", auth)
            if status != 200:
                stats.error(f"host {host.ident}: by-hash {name} {status}")
                return
            if hashlib.sha256(data).hexdigest() != sha or len(data) != size:
                with stats.lock:
                    stats.mismatches += 1
                    stats.mismatch_hosts.add(host.ident)
                return
            fetched[name] = data
        if host.downloads:
            host.pool = parsed_pool(files[f"main/binary-{ARCH}/Packages.gz"][0], fetched)
        host.inrelease = current
    if host.downloads and host.pool:
        filename, sha = random.choice(host.pool)  # noqa: S311 - load pattern, not crypto
        status, _, data = client.get(f"/{filename}", auth)
        if status != 200:
            stats.error(f"host {host.ident}: pool {filename} {status}")
            return
        with stats.lock:
            stats.downloads += 1
        if hashlib.sha256(data).hexdigest() != sha:
            with stats.lock:
                stats.mismatches += 1
                stats.mismatch_hosts.add(host.ident)


def make_hosts(count: int, tokens: dict[str, list[str]], seed: int = 14) -> list[Host]:
    import base64

    rnd = random.Random(seed)  # noqa: S311 - reproducible load pattern
    hosts = []
    for i in range(count):
        ch = CHANNELS[i % len(CHANNELS)]
        secret = tokens[ch][(i // len(CHANNELS)) % len(tokens[ch])]
        # the setup script writes "login token" into auth.conf.d on every host
        auth = "Basic " + base64.b64encode(f"token:{secret}".encode()).decode()
        hosts.append(Host(i, ch, auth, downloads=rnd.random() < DOWNLOAD_SHARE))
    return hosts


def run_round(
    base: str, hosts: list[Host], published: Published, stats: Stats, concurrency: int
) -> None:
    """Every host updates once, ``concurrency`` at a time, in a shuffled order."""
    todo: queue.SimpleQueue[Host | None] = queue.SimpleQueue()
    order = list(hosts)
    random.shuffle(order)
    for host in order:
        todo.put(host)
    for _ in range(concurrency):
        todo.put(None)

    def worker() -> None:
        client = Client(base, stats)
        try:
            while (host := todo.get()) is not None:
                try:
                    update(host, client, published, stats)
                except Exception as exc:
                    stats.error(f"host {host.ident}: {type(exc).__name__}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
        if t.is_alive():
            raise BenchError("a fleet round did not finish within 15 minutes")


@dataclass
class FleetResult:
    target: str
    hosts: int
    rounds: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    not_modified: int
    downloads: int
    errors: int
    error_samples: list[str]
    mismatched_hosts: int
    stale_hosts: int
    publishes: int
    publisher_errors: list[str]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_fleet(
    target: str,
    base: str,
    driver: AptshipDriver,
    tokens: dict[str, list[str]],
    *,
    hosts: int,
    rounds: int,
    concurrency: int,
    debs: Path,
) -> FleetResult:
    """``rounds`` updates of every host with publishing, then one final round without."""
    published = Published()
    publisher = Publisher(driver, published, debs)
    publisher.snapshot()
    fleet = make_hosts(hosts, tokens)
    stats = Stats()
    publisher.start()
    start = time.perf_counter()
    try:
        for _ in range(rounds):
            run_round(base, fleet, published, stats, concurrency)
    finally:
        publisher.stop_event.set()
        publisher.join(timeout=600)
    busy = time.perf_counter() - start
    with stats.lock:  # rates and latencies: the rounds with publishing
        requests, lat = stats.requests, sorted(stats.latencies) or [0.0]
        not_modified = stats.not_modified
    run_round(base, fleet, published, stats, concurrency)  # after the last publish
    for host in fleet:
        if host.inrelease is None or published.seq(host.channel, host.inrelease) != (
            published.latest(host.channel)
        ):
            stats.stale_hosts.add(host.ident)
    return FleetResult(
        target=target,
        hosts=hosts,
        rounds=rounds,
        requests=requests,
        seconds=busy,
        p50_ms=statistics.median(lat) * 1000,
        p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        not_modified=not_modified,
        downloads=stats.downloads,
        errors=stats.errors,
        error_samples=stats.error_samples,
        mismatched_hosts=len(stats.mismatch_hosts),
        stale_hosts=len(stats.stale_hosts),
        publishes=publisher.publishes,
        publisher_errors=publisher.errors,
    )


# -- the servers -----------------------------------------------------------------------
def _nginx_lb(upstreams: list[str], port: int) -> str:
    servers = "\n".join(f"        server {u};" for u in upstreams)
    return f"""    upstream replicas {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
        }}
    }}
"""


@contextlib.contextmanager
def target_server(target: str, driver: AptshipDriver, work: Path) -> Iterator[str]:
    """The base URL of target (a) ``serve``, (b) ``replicas`` or (c) ``front``."""
    from benchmarks import serverbench as sb
    from tests.front.nginx import render_front, start_nginx

    logs = work / "logs" / f"fleet-{target}"
    with contextlib.ExitStack() as stack:
        if target == "serve":
            base, _, _ = stack.enter_context(
                sb.aptship_server(driver.config_path, driver.env, logs)
            )
            yield base
            return
        if target == "replicas":
            bases = [
                stack.enter_context(
                    sb.aptship_server(driver.config_path, driver.env, logs / f"r{i}", workers=1)
                )[0]
                for i in (1, 2)
            ]
            body = None
        elif target == "front":
            bases = [
                stack.enter_context(sb.aptship_server(driver.config_path, driver.env, logs))[0]
            ]
        else:
            raise BenchError(f"unknown fleet target {target!r}")
        port = free_port()
        prefix = work / "nginx-fleet" / target  # not under serverbench's work/nginx
        shutil.rmtree(prefix, ignore_errors=True)
        upstreams = [b.removeprefix("http://") for b in bases]
        if target == "replicas":
            body = _nginx_lb(upstreams, port)
        else:
            body = render_front(
                port=port, upstreams=upstreams, root=driver.served_dir(), cache=prefix / "cache"
            )
        stack.enter_context(start_nginx(body, prefix, port, workers=2))
        yield f"http://127.0.0.1:{port}"


def make_tokens(driver: AptshipDriver) -> dict[str, list[str]]:
    from publisher.tokens import open_tokens

    repo = driver.repository()
    store = open_tokens(repo.config, repo.storage)
    tag = f"{time.time_ns():x}"
    return {
        ch: [store.create(f"fleet-{ch}-{tag}-{i}", "read", [ch]) for i in range(TOKENS_PER_CHANNEL)]
        for ch in CHANNELS
    }


def fleet_driver(work: Path, gnupghome: Path, fpr: str, entries: int) -> AptshipDriver:
    """A fresh aptship repository: ``entries`` in bench, the same in stage."""
    driver = AptshipDriver(
        work / "fleet", gnupghome, fpr, label="fleet", formats=("gz", "xz"), size=entries
    )
    driver.reset()
    files = debgen.dataset(work / "debs", entries)
    driver.import_all(files)
    driver.prepare_stage()
    subprocess.run(
        [APTSHIP, "--config", str(driver.config_path), "reindex", "--channel", STAGE],
        env=driver.env,
        capture_output=True,
        check=True,
        timeout=300,
    )
    return driver
