"""A real apt-get with an isolated configuration: never the machine's own apt state.

Every directory apt uses (sources, preferences, trusted keys, lists, cache, logs and
the dpkg status file) points into a temp tree through an ``APT_CONFIG`` file.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.aptloop import APT_DIRS


@dataclass
class AptResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class AptEnv:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in APT_DIRS:
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.status = root / "var/lib/dpkg/status"
        if not self.status.exists():
            self.status.write_text("")
        self.config = root / "apt.conf"
        self.config.write_text(
            "\n".join(
                [
                    f'Dir "{root}/";',
                    f'Dir::Etc "{root}/etc/apt/";',
                    f'Dir::Etc::SourceList "{root}/etc/apt/sources.list";',
                    f'Dir::Etc::SourceParts "{root}/etc/apt/sources.list.d";',
                    f'Dir::Etc::Preferences "{root}/etc/apt/preferences";',
                    f'Dir::Etc::PreferencesParts "{root}/etc/apt/preferences.d";',
                    f'Dir::Etc::Trusted "{root}/etc/apt/trusted.gpg";',
                    f'Dir::Etc::TrustedParts "{root}/etc/apt/trusted.gpg.d";',
                    f'Dir::Etc::netrc "{root}/etc/apt/auth.conf";',
                    f'Dir::Etc::netrcparts "{root}/etc/apt/auth.conf.d";',
                    f'Dir::Etc::main "{root}/etc/apt/apt.conf";',
                    f'Dir::Etc::parts "{root}/etc/apt/apt.conf.d";',
                    f'Dir::State "{root}/var/lib/apt/";',
                    f'Dir::State::status "{self.status}";',
                    f'Dir::Cache "{root}/var/cache/apt/";',
                    f'Dir::Log "{root}/var/log/apt/";',
                    'APT::Architecture "amd64";',
                    'APT::Architectures { "amd64"; };',
                    'Acquire::Languages "none";',
                    'Acquire::Retries "0";',
                    'Debug::NoLocking "true";',
                    'APT::Sandbox::User "root";',
                    "",
                ]
            )
        )
        (root / "etc/apt/sources.list").write_text("")

    def add_source(self, url: str, suite: str, key: Path, name: str = "aptship") -> None:
        keyfile = self.root / "etc/apt/keyrings" / f"{name}.asc"
        keyfile.write_bytes(key.read_bytes())
        (self.root / "etc/apt/sources.list.d" / f"{name}.list").write_text(
            f"deb [signed-by={keyfile}] {url} {suite} main\n"
        )

    def set_preferences(self, text: str, name: str = "aptship") -> None:
        (self.root / "etc/apt/preferences.d" / f"{name}.pref").write_text(text)

    def set_installed(self, package: str, version: str, arch: str = "amd64") -> None:
        """Pretend ``package`` at ``version`` is installed (a private dpkg status file)."""
        self.status.write_text(
            f"Package: {package}\nStatus: install ok installed\nPriority: optional\n"
            f"Section: misc\nMaintainer: Test <test@example.invalid>\nArchitecture: {arch}\n"
            f"Version: {version}\nDescription: installed test package\n x\n\n"
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["APT_CONFIG"] = str(self.config)
        env["LC_ALL"] = "C"
        env["DEBIAN_FRONTEND"] = "noninteractive"
        return env

    def run(self, *args: str, tool: str = "apt-get") -> AptResult:
        proc = subprocess.run(
            [tool, *args], env=self.env(), capture_output=True, text=True, timeout=300, check=False
        )
        return AptResult(proc.returncode, proc.stdout, proc.stderr)

    def update(self) -> AptResult:
        return self.run("update", "-o", "APT::Update::Error-Mode=any")

    def prefer_compression(self, order: str) -> None:
        """Make apt try ``order`` (``xz``, ``gz``...) first for every index."""
        self.config.write_text(
            self.config.read_text() + f'Acquire::CompressionTypes::Order {{ "{order}"; }};\n'
        )

    def update_clean(self) -> AptResult:
        """``apt-get update`` that must succeed without a warning or an error."""
        result = self.update()
        assert result.returncode == 0, result.output
        assert "W:" not in result.output and "E:" not in result.output, result.output
        return result

    def download(self, *specs: str) -> AptResult:
        return self.run("install", "-y", "--download-only", "--no-install-recommends", *specs)

    def fetch(self, spec: str) -> bytes:
        """Download exactly one .deb for ``spec`` (``name=version``); return its bytes."""
        got = self.download(spec)
        assert got.returncode == 0, got.output
        name = spec.split("=", 1)[0]
        fetched = list(self.archives.glob(f"{name}_*.deb"))
        assert len(fetched) == 1, fetched
        data = fetched[0].read_bytes()
        fetched[0].unlink()
        return data

    def simulate(self, *specs: str) -> AptResult:
        return self.run("-s", "install", *specs)

    def policy(self, package: str) -> AptResult:
        return self.run("policy", package, tool="apt-cache")

    @property
    def archives(self) -> Path:
        return self.root / "var/cache/apt/archives"


def set_up_host(url: str, channel: str, secret: str, root: Path) -> AptEnv:
    """An isolated apt at ``root``, configured by the server's own setup script.

    The script runs with ``APTSHIP_ROOT_MODE=prefix``: apt runs outside the root with
    :class:`AptEnv`'s ``Dir`` settings pointing into it (docs/hosts.md).
    """
    apt = AptEnv(root)
    done = run_setup_script(url, channel, secret, root)
    assert done.returncode == 0, done.stderr
    return apt


def run_setup_script(
    url: str, channel: str, secret: str, root: Path
) -> subprocess.CompletedProcess[str]:
    """Fetch the server's setup script for ``channel`` and run it against ``root``
    (``APTSHIP_ROOT_MODE=prefix``); the finished process, whatever its exit code."""
    import requests

    script = requests.get(
        f"{url}/api/v1/channels/{channel}/setup", auth=("host", secret), timeout=30
    )
    assert script.status_code == 200, script.text
    return subprocess.run(
        ["sh"],
        input=script.text,
        env={"APTSHIP_ROOT": str(root), "APTSHIP_ROOT_MODE": "prefix", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
