"""One driver per tool: aptship (two index-format configurations), reprepro and aptly.

Every driver runs the same operations on the same .debs with the same GPG key, each
as real subprocesses (so interpreter or binary start-up counts):

* ``import_all``: import N .debs into channel ``bench`` and publish it, signed;
* ``add_one``: add one more .deb to ``bench`` (end to end, signed);
* ``promote``: copy one version from ``bench`` to ``stage`` and publish ``stage``;
* ``reindex``: re-render and re-sign ``bench``;
* ``verify``: the tool's fast consistency check.

``prepare_stage`` (not timed) fills ``stage`` with the N entries of ``bench``, so a
promotion lands in a channel of N too.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from benchmarks.common import APTSHIP, TRASH, Sample, chunk_args, discard, run, run_all, tool_env

OPS = ("import", "add", "promote", "reindex", "verify")
OP_TITLES = {
    "import": "import N .debs",
    "add": "add one .deb (signed)",
    "promote": "promote one version",
    "reindex": "re-render + sign channel",
    "verify": "verify --fast",
}
BENCH, STAGE = "bench", "stage"


class Driver:
    name = ""
    commands: ClassVar[dict[str, str]] = {}  # what each operation runs, for the report

    def __init__(self, work: Path, gnupghome: Path, fingerprint: str) -> None:
        self.work = work
        self.gnupghome = gnupghome
        self.fpr = fingerprint
        self.env = tool_env(gnupghome, work / "pycache")

    @property
    def root(self) -> Path:
        raise NotImplementedError

    def reset(self) -> None:
        discard(self.root, self.work / TRASH)
        self.root.mkdir(parents=True)

    def import_all(self, files: Sequence[Path]) -> Sample:
        raise NotImplementedError

    def prepare_stage(self) -> None:
        raise NotImplementedError

    def add_one(self, deb: Path) -> Sample:
        raise NotImplementedError

    def promote(self, package: str, version: str) -> Sample:
        raise NotImplementedError

    def reindex(self) -> Sample:
        raise NotImplementedError

    def verify(self) -> Sample | None:
        raise NotImplementedError

    # what apt sees: (directory served over HTTP, armored public key)
    def served_dir(self) -> Path:
        raise NotImplementedError

    def public_key(self) -> Path:
        key = self.root / "bench-key.asc"
        if not key.exists():
            out = subprocess.run(
                ["gpg", "--armor", "--export", self.fpr],
                env=self.env,
                capture_output=True,
                check=True,
            ).stdout
            key.write_bytes(out)
        return key


class AptshipDriver(Driver):
    commands: ClassVar[dict[str, str]] = {
        "import": "aptship publish --channel bench @LIST (one commit, one render)",
        "add": "aptship publish --channel bench FILE",
        "promote": "aptship promote PKG=VER --from bench --to stage",
        "reindex": "aptship reindex --channel bench",
        "verify": "aptship verify --fast --channel bench",
    }

    def __init__(
        self,
        work: Path,
        gnupghome: Path,
        fingerprint: str,
        *,
        label: str,
        formats: Sequence[str] | None,
        size: int,
    ) -> None:
        super().__init__(work, gnupghome, fingerprint)
        self.name = label
        self.formats = list(formats) if formats else None
        self.size = size
        self.slug = label.replace(" ", "-").replace("+", "")

    @property
    def root(self) -> Path:
        return self.work / "repos" / f"{self.slug}-{self.size}"

    @property
    def config_path(self) -> Path:
        return self.root / "aptship.toml"

    def config_dict(self, storage: dict[str, object] | None = None) -> dict[str, object]:
        repository: dict[str, object] = {"origin": "aptship-bench", "label": "aptship-bench"}
        if self.formats:
            repository["index_formats"] = self.formats
        return {
            "repository": repository,
            "storage": storage or {"type": "local", "path": str(self.root / "repo")},
            "signing": {"gnupghome": str(self.gnupghome), "keys": [self.fpr]},
            "server": {},
            "channels": {
                BENCH: {"description": "benchmark channel", "architectures": ["amd64"]},
                STAGE: {"architectures": ["amd64"], "promote_from": [BENCH]},
            },
        }

    def reset(self) -> None:
        super().reset()
        (self.root / "repo").mkdir()
        self.config_path.write_text(toml_text(self.config_dict()))

    def cli(self, *args: str) -> list[str]:
        return [APTSHIP, "--config", str(self.config_path), *args]

    def import_all(self, files: Sequence[Path]) -> Sample:
        # one command, one commit, one render: `publish @LIST` (docs/cli.md)
        listing = self.root / "import.list"
        listing.write_text("".join(f"{f}\n" for f in files))
        return run(self.cli("publish", "--channel", BENCH, f"@{listing}"), env=self.env)[0]

    def repository(self):  # type: ignore[no-untyped-def]
        from publisher.config import load_config
        from publisher.repo import Repository

        return Repository(load_config(self.config_path))

    def prepare_stage(self) -> None:
        repo = self.repository()
        entries = [e for _n, ps in repo.states.view(BENCH).packages() for e in ps.entries]
        repo.add_entries(repo.config.channel(STAGE), entries, action="publish")

    def add_one(self, deb: Path) -> Sample:
        return run(self.cli("publish", "--channel", BENCH, str(deb)), env=self.env)[0]

    def promote(self, package: str, version: str) -> Sample:
        args = self.cli("promote", f"{package}={version}", "--from", BENCH, "--to", STAGE)
        return run(args, env=self.env)[0]

    def reindex(self) -> Sample:
        return run(self.cli("reindex", "--channel", BENCH), env=self.env)[0]

    def verify(self) -> Sample:
        return run(self.cli("verify", "--fast", "--channel", BENCH), env=self.env)[0]

    def served_dir(self) -> Path:
        return self.root / "repo"

    def public_key(self) -> Path:
        return self.root / "repo" / "archive-keyring.asc"


class RepreproDriver(Driver):
    name = "reprepro"
    commands: ClassVar[dict[str, str]] = {
        "import": "reprepro includedeb bench FILE... (in chunks)",
        "add": "reprepro includedeb bench FILE",
        "promote": "reprepro copy stage bench PKG",
        "reindex": "reprepro export bench",
        "verify": "reprepro checkpool fast",
    }

    def __init__(self, work: Path, gnupghome: Path, fingerprint: str, *, size: int) -> None:
        super().__init__(work, gnupghome, fingerprint)
        self.size = size

    @property
    def root(self) -> Path:
        return self.work / "repos" / f"reprepro-{self.size}"

    def reset(self) -> None:
        super().reset()
        conf = self.root / "conf"
        conf.mkdir()
        dist = (
            "Codename: {name}\nSuite: {name}\nArchitectures: amd64\nComponents: main\n"
            f"SignWith: {self.fpr}\nDebIndices: Packages Release . .gz .xz\n"
        )
        (conf / "distributions").write_text(
            dist.format(name=BENCH) + "\n" + dist.format(name=STAGE)
        )
        (conf / "options").write_text(f"basedir {self.root}\n")

    def cmd(self, *args: str) -> list[str]:
        return ["reprepro", "-b", str(self.root), "--silent", *args]

    def import_all(self, files: Sequence[Path]) -> Sample:
        return run_all(
            (self.cmd("includedeb", BENCH, *chunk) for chunk in chunk_args(files)), env=self.env
        )

    def prepare_stage(self) -> None:
        run(self.cmd("copymatched", STAGE, BENCH, "*"), env=self.env)

    def add_one(self, deb: Path) -> Sample:
        return run(self.cmd("includedeb", BENCH, str(deb)), env=self.env)[0]

    def promote(self, package: str, version: str) -> Sample:
        # reprepro keeps one version per package: `copy` takes the one in bench
        return run(self.cmd("copy", STAGE, BENCH, package), env=self.env)[0]

    def reindex(self) -> Sample:
        return run(self.cmd("export", BENCH), env=self.env)[0]

    def verify(self) -> Sample:
        return run(self.cmd("checkpool", "fast"), env=self.env)[0]

    def served_dir(self) -> Path:
        return self.root


class AptlyDriver(Driver):
    name = "aptly"
    commands: ClassVar[dict[str, str]] = {
        "import": "aptly repo add bench FILE... (in chunks) + aptly publish repo bench",
        "add": "aptly repo add bench FILE + aptly publish update bench",
        "promote": "aptly repo copy bench stage 'PKG (= VER)' + aptly publish update stage",
        "reindex": "aptly publish update bench",
        "verify": "aptly db cleanup -dry-run (closest analogue, not a verify)",
    }

    def __init__(self, work: Path, gnupghome: Path, fingerprint: str, *, size: int) -> None:
        super().__init__(work, gnupghome, fingerprint)
        self.size = size

    @property
    def root(self) -> Path:
        return self.work / "repos" / f"aptly-{self.size}"

    def reset(self) -> None:
        super().reset()
        conf = {
            "rootDir": str(self.root / "root"),
            "architectures": ["amd64"],
            "gpgProvider": "gpg",
            "skipContentsPublishing": True,
            "skipBz2Publishing": True,
        }
        (self.root / "aptly.conf").write_text(json.dumps(conf, indent=1))
        for name in (BENCH, STAGE):
            run(
                self.cmd("repo", "create", f"-distribution={name}", "-component=main", name),
                env=self.env,
            )

    def cmd(self, *args: str) -> list[str]:
        return ["aptly", f"-config={self.root / 'aptly.conf'}", *args]

    def publish_args(self, name: str, first: bool) -> list[str]:
        if first:
            return self.cmd(
                "publish",
                "repo",
                "-batch",
                f"-gpg-key={self.fpr}",
                f"-distribution={name}",
                "-architectures=amd64",
                name,
            )
        return self.cmd("publish", "update", "-batch", f"-gpg-key={self.fpr}", name)

    def import_all(self, files: Sequence[Path]) -> Sample:
        cmds = [self.cmd("repo", "add", BENCH, *chunk) for chunk in chunk_args(files)]
        cmds.append(self.publish_args(BENCH, first=True))
        return run_all(cmds, env=self.env)

    def prepare_stage(self) -> None:
        run(self.cmd("repo", "copy", BENCH, STAGE, "Name"), env=self.env)
        run(self.publish_args(STAGE, first=True), env=self.env)

    def add_one(self, deb: Path) -> Sample:
        return run_all(
            [self.cmd("repo", "add", BENCH, str(deb)), self.publish_args(BENCH, first=False)],
            env=self.env,
        )

    def promote(self, package: str, version: str) -> Sample:
        return run_all(
            [
                self.cmd("repo", "copy", BENCH, STAGE, f"{package} (= {version})"),
                self.publish_args(STAGE, first=False),
            ],
            env=self.env,
        )

    def reindex(self) -> Sample:
        return run(self.publish_args(BENCH, first=False), env=self.env)[0]

    def verify(self) -> Sample:
        return run(self.cmd("db", "cleanup", "-dry-run"), env=self.env)[0]

    def served_dir(self) -> Path:
        return self.root / "root" / "public"


def toml_text(data: dict[str, object]) -> str:
    """A tiny TOML writer for the config dicts above (tables of scalars and lists)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines: list[str] = []

    def table(name: str, body: dict[str, object]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for name, body in data.items():
        assert isinstance(body, dict)
        table(name, body)
    return "\n".join(lines)
