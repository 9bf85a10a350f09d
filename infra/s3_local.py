"""A real S3 API on loopback (moto's server) for tests and benchmarks: start it, fill a bucket from a folder, and
hand out the ``storage_options`` that fsspec/s3fs need to reach it. moto is a test dependency, loaded on use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalS3", "local_s3"]

REGION = "us-east-1"
_KEY = _SECRET = "testing"  # moto accepts any; nothing here is a real credential


@dataclass(frozen=True)
class LocalS3:
    endpoint: str

    @property
    def storage_options(self) -> dict:
        return {"key": _KEY, "secret": _SECRET, "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION}}

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=_KEY, aws_secret_access_key=_SECRET
        )

    def upload_folder(self, root: Path, bucket: str, prefix: str) -> str:
        """Every file under ``root`` into a new ``bucket`` under ``prefix``; returns the ``s3://`` URL of it.

        moto keeps its buckets per process, not per server: two servers in one test process share them, so a
        bucket that exists already is refused rather than mixed with another test's files."""
        client = self.client()
        if bucket in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            raise ValueError(f"bucket {bucket!r} exists already in this process's moto: give each upload its own")
        client.create_bucket(Bucket=bucket)
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root)}")
        return f"s3://{bucket}/{prefix}"


@contextlib.contextmanager
def local_s3() -> Iterator[LocalS3]:
    """moto's S3 server on a free loopback port for the block's duration."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield LocalS3(f"http://{host}:{port}")
    finally:
        server.stop()
