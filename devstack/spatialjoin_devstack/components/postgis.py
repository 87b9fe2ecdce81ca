"""PostGIS: Debian's postgresql-15-postgis-3 in a private cluster on 127.0.0.1."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

import psycopg

from ..procs import free_port, start_process, stop_process
from ..waiting import wait_for
from .base import Settings, StackContext

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PACKAGES = ["postgresql-15", "postgresql-15-postgis-3"]
SUPERUSER = "spatialjoin"
DATABASE = "spatialjoin"


def _service_user() -> str | None:
    """PostgreSQL refuses to run as root: use the package's ``postgres`` user then."""
    return "postgres" if os.geteuid() == 0 else None


def _run_as(argv: list[str], user: str | None) -> None:
    subprocess.run(argv, check=True, user=user, stdout=subprocess.DEVNULL)


class PostgisComponent:
    """A throwaway cluster tuned for tests: durability is traded for speed."""

    name = "postgis"

    def install(self, ctx: StackContext) -> None:
        if (PG_BIN / "postgres").exists() and Path(
            "/usr/share/postgresql/15/extension/postgis.control"
        ).exists():
            return
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                       check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})

    def start(self, ctx: StackContext) -> Settings:
        user = _service_user()
        data = ctx.data_dir(self.name) / "pgdata"
        sockets = ctx.data_dir(self.name) / "sockets"
        password = secrets.token_hex(12)
        if data.exists():
            shutil.rmtree(data)
        sockets.mkdir(parents=True, exist_ok=True)
        pwfile = ctx.data_dir(self.name) / "pwfile"
        pwfile.write_text(password + "\n")
        if user:
            uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
            for path in (ctx.state_dir, ctx.state_dir / "data", ctx.data_dir(self.name)):
                path.chmod(0o755)
            os.chown(ctx.data_dir(self.name), uid, gid)
            os.chown(sockets, uid, gid)
            os.chown(pwfile, uid, gid)
        _run_as([str(PG_BIN / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                 "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                 "--locale=C.UTF-8"], user)
        pwfile.unlink()
        port = free_port()
        start_process(self.name, [
            str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
            "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
            "-c", "shared_buffers=256MB", "-c", "work_mem=32MB",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ], ctx.run_dir, user=user)
        admin_url = f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/postgres"
        wait_for(lambda: _can_connect(admin_url), timeout=60,
                 what="PostgreSQL to accept connections")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        url = f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        return {"port": port, "url": url, "sockets": str(sockets)}

    def healthy(self, ctx: StackContext, settings: Settings) -> bool:
        with psycopg.connect(settings["url"], connect_timeout=3) as conn:
            row = conn.execute("SELECT postgis_lib_version()").fetchone()
        return row is not None and bool(row[0])

    def env(self, settings: Settings) -> dict[str, str]:
        return {"SPATIALJOIN_DATABASE_URL": settings["url"]}

    def stop(self, ctx: StackContext) -> None:
        stop_process(ctx.run_dir, self.name, timeout=30)


def _can_connect(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=2):
        return True
