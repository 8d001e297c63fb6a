"""A throwaway PostgreSQL cluster for tests and benchmarks (not used by the service).

``TempCluster.start()`` runs ``initdb`` into a fresh temporary directory and ``pg_ctl
start`` on 127.0.0.1 with a free port and the unix socket inside that directory;
``stop()`` stops it and deletes the directory. The binaries come from ``$PG_BINDIR``,
``pg_config --bindir``, ``PATH`` or Debian's ``/usr/lib/postgresql/*/bin`` (newest first).

PostgreSQL refuses to run as root, and CI runs as root: then the cluster's directory is
handed to an unprivileged user (``postgres`` when it exists, else ``nobody``) and
``initdb``/``pg_ctl`` run as that user through ``runuser``. The superuser ``nlu`` has a
random password (scram over TCP), so other local users cannot use the cluster.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MISSING_MESSAGE", "ClusterError", "TempCluster", "find_bindir"]

MISSING_MESSAGE = "PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's postgresql package"
SUPERUSER = "nlu"


class ClusterError(RuntimeError):
    """The throwaway cluster could not be started (binaries missing, initdb failed, ...)."""


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name  # /usr/lib/postgresql/15/bin -> "15"
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ClusterError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


@dataclass
class TempCluster:
    """One throwaway cluster. ``durable=False`` (tests) turns fsync off; benchmarks keep
    PostgreSQL's defaults (fsync on, synchronous_commit on) to compare fairly with SQLite."""

    durable: bool = False
    max_connections: int = 200
    bindir: Path | None = None
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    root: Path | None = None

    @property
    def running(self) -> bool:
        return self.root is not None

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` on this cluster (TCP to 127.0.0.1, with the password)."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, args: list[str], user: str | None) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", user, "--", *args] if user else args
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def start(self) -> TempCluster:
        if self.running:
            return self
        bindir = self.bindir or find_bindir()
        if bindir is None:
            raise ClusterError(MISSING_MESSAGE)
        self.bindir = bindir
        user = None
        if os.geteuid() == 0:
            user = _unprivileged_user()
            if shutil.which("runuser") is None:
                raise ClusterError("running as root needs runuser (util-linux) to start PostgreSQL as another user")
        # Directly under the system temp folder: pytest's own tmp folders are 0700 and the
        # unprivileged user could not reach a cluster inside them.
        root = Path(tempfile.mkdtemp(prefix="nlu-pg-"))
        self.root = root
        try:
            data, pwfile = root / "data", root / "pwfile"
            pwfile.write_text(self.password + "\n", encoding="utf-8")
            if user:
                entry = pwd.getpwnam(user)
                for path in (root, pwfile):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            done = self._run(
                [
                    str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--pwfile", str(pwfile),
                    "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
                ],
                user,
            )
            if done.returncode != 0:
                raise ClusterError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
            settings = [
                "listen_addresses='127.0.0.1'",
                f"unix_socket_directories='{root}'",
                f"max_connections={self.max_connections}",
                "shared_buffers=64MB",
                "log_min_messages=warning",
            ]
            if not self.durable:
                settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
            with (data / "postgresql.conf").open("a", encoding="utf-8") as fh:
                fh.write("\n# nlu throwaway cluster\n" + "\n".join(settings) + "\n")
            last = ""
            for _ in range(3):  # the free port may be taken between choosing and binding it
                self.port = _free_port()
                done = self._run(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", f"-p {self.port}", "-w", "-t", "60", "start"],
                    user,
                )
                if done.returncode == 0:
                    return self
                last = done.stderr.strip() or done.stdout.strip()
                with suppress(OSError):
                    last += "\n" + (root / "server.log").read_text(encoding="utf-8", errors="replace")[-2000:]
            raise ClusterError(f"pg_ctl start failed: {last}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (immediately: it is throwaway) and delete its directory."""
        root, self.root = self.root, None
        if root is None:
            return
        if self.bindir is not None and (root / "data" / "postmaster.pid").exists():
            user = _unprivileged_user() if os.geteuid() == 0 else None
            self._run([str(self.bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop"], user)
        shutil.rmtree(root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        import psycopg
        from psycopg import sql

        # FILE_COPY: with a tiny template, copying files is faster than WAL-logging each block.
        with psycopg.connect(self.url(), autocommit=True) as conn:
            strategy = sql.SQL(" STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else "")
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)) + strategy)
        return self.url(name)

    def create_schema(self, name: str, dbname: str = "postgres") -> str:
        """Create an empty schema and return a URL whose ``search_path`` is that schema:
        a clean slate in milliseconds, where CREATE DATABASE takes a checkpoint (~0.1-0.3 s)."""
        from urllib.parse import quote

        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        return self.url(dbname) + "?options=" + quote(f"-c search_path={name}", safe="")

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def __enter__(self) -> TempCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
