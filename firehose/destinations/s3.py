"""Delivery to S3 or any S3-compatible store, through boto3.

Endpoint, region and credentials come from the standard AWS configuration
(``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION``, profiles, the
credential chain) unless the daemon's ``s3:`` settings or the bucket's entry in
``buckets:`` name them. Objects below ``multipart_threshold_bytes`` are one
PutObject; larger ones are a multipart upload, which is aborted if any step
fails. Because keys are sealed before delivery (see ``spool/ledger.py``), a
re-delivery after a crash targets the same key; any multipart upload left
behind for that key by the crashed attempt is aborted first.

boto3 is blocking, so every call runs in the destinations' thread pool.
botocore's own retries are off (``max_attempts`` 1 by default): the pipeline
owns retries, so the spool, not a client, holds data while S3 is down.
Bodies (and multipart parts) go to boto3 as files read in place from the
object's parts (``bodyfile.py``), never joined into one buffer.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from firehose.destinations.base import DELIVERED, DestinationContext, ObjectDestination, Outcome
from firehose.destinations.bodyfile import BodyFile, body_pieces
from firehose.destinations.clientcache import ClientCache
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import ObjectBatch
from firehose.settings import BucketSettings, S3Settings

log = logging.getLogger("firehose.destinations.s3")


_clients = ClientCache()


def shared_client(s3: S3Settings, bucket: BucketSettings | None = None) -> Any:
    """The process's S3 client for these settings, made once and shared by every stream that uses
    them (``clientcache``)."""
    bucket = bucket or BucketSettings()
    return _clients.get((s3, bucket), lambda: make_client(s3, bucket))


def make_client(s3: S3Settings, bucket: BucketSettings | None = None) -> Any:
    """A boto3 S3 client; explicit settings win over the AWS configuration chain."""
    bucket = bucket or BucketSettings()
    session = boto3.session.Session(
        profile_name=bucket.profile or s3.profile,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
    )
    config = BotoConfig(
        connect_timeout=s3.connect_timeout_seconds,
        read_timeout=s3.read_timeout_seconds,
        retries={"max_attempts": s3.max_attempts, "mode": "standard"},
        max_pool_connections=32,
    )
    return session.client(
        "s3",
        endpoint_url=bucket.endpoint_url or s3.endpoint_url,
        region_name=bucket.region or s3.region or session.region_name or "us-east-1",
        verify=s3.verify,
        config=config,
    )


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"S3 {exc.operation_name} failed: {err.get('Code')} (HTTP {status}): {err.get('Message')}"
    return f"S3 request failed: {exc}"


class S3Destination(ObjectDestination):
    name = "s3"

    def __init__(self, bucket: str, ctx: DestinationContext, *, kms_key_arn: str | None = None,
                 client: Any | None = None) -> None:
        self.bucket = bucket
        self.kms_key_arn = kms_key_arn
        self._ctx = ctx
        self._s3 = ctx.settings.s3
        self._bucket_settings = ctx.settings.buckets.get(bucket) or BucketSettings()
        self._client = client
        self._client_lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = shared_client(self._s3, self._bucket_settings)
            return self._client

    async def check(self) -> None:
        try:
            await self._ctx.run(lambda: self.client.head_bucket(Bucket=self.bucket))
        except (ClientError, BotoCoreError) as exc:
            raise DestinationUnavailable(_describe_error(exc)) from exc

    async def deliver(self, batch: ObjectBatch) -> Outcome:
        try:
            if batch.size >= self._s3.multipart_threshold_bytes:
                await self._ctx.run(self._multipart, batch)
            else:
                await self._ctx.run(self._put, batch)
        except (ClientError, BotoCoreError) as exc:
            raise DestinationError(_describe_error(exc), retriable=True) from exc
        return DELIVERED

    def _object_args(self, batch: ObjectBatch) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": batch.key, "ContentType": batch.content_type}
        if batch.content_encoding:
            args["ContentEncoding"] = batch.content_encoding
        if batch.metadata:
            args["Metadata"] = batch.metadata
        if self.kms_key_arn:
            args["ServerSideEncryption"] = "aws:kms"
            args["SSEKMSKeyId"] = self.kms_key_arn
        elif self._bucket_settings.server_side_encryption:
            args["ServerSideEncryption"] = self._bucket_settings.server_side_encryption
            if self._bucket_settings.sse_kms_key_id:
                args["SSEKMSKeyId"] = self._bucket_settings.sse_kms_key_id
        return args

    def _put(self, batch: ObjectBatch) -> None:
        with BodyFile(batch.parts) as body:
            self.client.put_object(Body=body, **self._object_args(batch))

    def _multipart(self, batch: ObjectBatch) -> None:
        self._abort_stale_uploads(batch.key)
        upload = self.client.create_multipart_upload(**self._object_args(batch))
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, piece in enumerate(body_pieces(batch.parts, self._s3.multipart_chunk_bytes), start=1):
                with piece:
                    resp = self.client.upload_part(
                        Bucket=self.bucket, Key=batch.key, UploadId=upload_id, PartNumber=number, Body=piece
                    )
                parts.append({"PartNumber": number, "ETag": resp["ETag"]})
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=batch.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=batch.key, UploadId=upload_id)
            except (ClientError, BotoCoreError) as exc:
                log.warning("Could not abort a failed multipart upload; a bucket lifecycle rule will.",
                            extra={"bucket": self.bucket, "key": batch.key, "error": str(exc)})
            raise

    def _abort_stale_uploads(self, key: str) -> None:
        """Abort uploads a crashed earlier attempt left for this exact key."""
        resp = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        for upload in resp.get("Uploads", []):
            if upload.get("Key") == key:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
                log.info("Aborted a multipart upload left by an interrupted delivery.",
                         extra={"bucket": self.bucket, "key": key})

