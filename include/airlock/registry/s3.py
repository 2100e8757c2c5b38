"""The S3 backend (AWS S3, MinIO; moto in tests), through boto3.

Put-if-absent is a conditional write: ``PutObject`` / ``CompleteMultipartUpload``
with ``If-None-Match: *``; the server answers 412 when the key exists, so of two
concurrent writers exactly one creates it. Where the bucket has Object Lock
enabled (detected once, per store) every object is also written with a
retention date, so not even a credential with delete rights can remove it
before then.

Checksums, and why each step is there:

1. Before an object becomes visible we hash the exact bytes we send and compare
   them with the manifest: small files are read once into memory and hashed;
   large ones go up as a multipart upload whose parts we hash as we read them,
   and the upload is completed only when the whole-file sha256 matches
   (otherwise aborted). So a file that changed since its manifest is never
   stored, on any server.
2. Each request carries the manifest's sha256 (``ChecksumSHA256`` for a single
   PUT, per-part checksums for multipart) so a server that validates checksums
   (S3, MinIO) rejects bytes damaged in transit. moto stores the client's value
   without checking it, which is why step 1 does not rely on the server.
3. Confirmation of an object this store just created needs no second read
   (:attr:`S3Store.confirms_own_writes`): step 1 hashed the exact bytes sent,
   step 2 had the server validate them, and the checksum the server answers
   with (the object's sha256 for a single PUT, the checksum of the parts'
   sha256s for a multipart upload) must be the one we computed. Verification of
   a stored object later (:meth:`S3Store.stored_sha256`: ``airlock registry
   check``, a key that already existed) still re-reads it with ``reread=True``
   (the default): that is what confirms the stored bytes on a server that does
   not validate (moto).

Large files go up as a multipart upload whose parts are read once, in order
(the whole-file sha256 is taken over that read), and sent in parallel, each with
its own SHA-256 checksum computed from the same buffer; at most
``max_parts_in_flight`` parts (of ``part_size``) are held in memory per store.

A promotion killed during a multipart upload leaves the upload unfinished:
invisible to readers, but its parts stay stored (and billed) forever. They are
listed and aborted as leftovers (:mod:`airlock.registry.leftovers`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import quote

import airlock.registry.leftovers as _policy  # module attributes: the thresholds stay adjustable (tests)
from airlock.fsutil import run_all
from airlock.hashing import PinnedFile
from airlock.redact import redact_url
from airlock.registry.base import (
    MAX_CONTROL_OBJECT_BYTES,
    RegistryError,
    Source,
    SourceChangedError,
    StoredObjectError,
)
from airlock.registry.leftovers import Leftover, describe_age

# Above this size a file goes up as a multipart upload (a single PUT tops out at 5 GiB), in parts of this size.
DEFAULT_PART_SIZE = 64 * 1024 * 1024
_MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last
_READ_CHUNK = 1 << 20
# Parts read but not yet sent, per store (memory: this many times the part size).
DEFAULT_PARTS_IN_FLIGHT = 8
# S3 answers 409 ConditionalRequestConflict when two conditional writes to one key race; retrying gets 200 or 412.
_CONFLICT_RETRIES = 8

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


@dataclass(frozen=True)
class Retention:
    """Object Lock retention applied to every object on a bucket that has Object Lock enabled."""

    mode: LockMode = "COMPLIANCE"
    days: int = 3650

    def until(self, now: datetime | None = None) -> datetime:
        return (now or datetime.now(UTC)) + timedelta(days=self.days)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` -> (bucket, prefix without slashes at either end)."""
    if not url.startswith("s3://"):
        raise RegistryError(f"registry URL {redact_url(url)!r} is not s3://bucket[/prefix]")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise RegistryError(f"registry URL {redact_url(url)!r} names no bucket")
    if "@" in bucket or ":" in bucket or "?" in url or "#" in url:
        # Credentials belong in the S3 connection, never in the registry URL (it is printed and stored).
        raise RegistryError(f"registry URL {redact_url(url)!r}: s3://bucket[/prefix] takes no credentials, "
                            f"port or query; configure the endpoint and credentials separately")
    return bucket, prefix.strip("/")


class S3Store:
    """An :class:`~airlock.registry.base.ObjectStore` in ``bucket`` under ``prefix``."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        retention: Retention | None = None,
        reread: bool = True,
        part_size: int = DEFAULT_PART_SIZE,
        max_parts_in_flight: int = DEFAULT_PARTS_IN_FLIGHT,
    ) -> None:
        if part_size < _MIN_PART_SIZE:
            raise RegistryError(f"S3 part size {part_size} is below S3's minimum of {_MIN_PART_SIZE} bytes")
        self.client = client
        self.max_parts_in_flight = max(1, max_parts_in_flight)
        # Shared by every upload of this store: bounds the memory of parts read but not yet sent.
        self._part_slots = threading.BoundedSemaphore(self.max_parts_in_flight)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.reread = reread
        self.part_size = part_size
        self._retention_setting = retention
        self._lock: Retention | None | Literal["unknown"] = "unknown"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def object_url(self, key: str) -> str:
        return f"s3://{self.bucket}/{quote(self._key(key))}"

    # ------------------------------------------------------------------ object lock

    @property
    def object_lock(self) -> Retention | None:
        """The retention this store applies: None when the bucket has no Object Lock (detected once)."""
        if self._lock == "unknown":
            self._lock = self._detect_lock()
        return self._lock

    def _detect_lock(self) -> Retention | None:
        from botocore.exceptions import ClientError

        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except ClientError as exc:
            if _code(exc) == "ObjectLockConfigurationNotFoundError":
                return None
            # Fail closed: not knowing whether versions are locked is not a reason to write them unlocked.
            raise RegistryError(
                f"s3://{self.bucket}: cannot read the Object Lock configuration ({_code(exc)}); "
                f"grant s3:GetBucketObjectLockConfiguration to the registry's credentials"
            ) from None
        if config.get("ObjectLockEnabled") != "Enabled":
            return None
        if self._retention_setting is not None:
            return self._retention_setting
        default = (config.get("Rule") or {}).get("DefaultRetention") or {}
        days = int(default.get("Days") or 0) or 365 * int(default.get("Years") or 0)
        if default.get("Mode") and days:
            return Retention(mode=default["Mode"], days=days)
        return Retention()

    def _lock_args(self) -> dict[str, Any]:
        lock = self.object_lock
        if lock is None:
            return {}
        return {"ObjectLockMode": lock.mode, "ObjectLockRetainUntilDate": lock.until()}

    # ------------------------------------------------------------------ writing

    # A key put_if_absent creates was checked against (size, sha256) before it appeared (see the module docstring).
    confirms_own_writes = True

    def put_if_absent(self, key: str, source: Source, size: int, sha256: str) -> bool:
        if isinstance(source, PinnedFile):
            source = source.path  # read once while sending, hashed in that read
        if self._exists(key):
            # A re-run after a crash: do not read (or send) gigabytes only to be told 412. The conditional
            # write below still decides when the key appears in between.
            return False
        if size <= self.part_size:
            data = source if isinstance(source, bytes) else _read_small(source, self.part_size)
            _check_bytes(key, source, len(data), hashlib.sha256(data).hexdigest(), size, sha256)
            return self._put_single(key, data, sha256)
        if isinstance(source, bytes):
            return self._put_multipart(key, io.BytesIO(source), source, size, sha256)
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceChangedError(f"{source}: cannot open ({exc.strerror}); nothing stored") from None
        with open(fd, "rb", closefd=True) as reader:
            return self._put_multipart(key, reader, source, size, sha256)

    def _put_single(self, key: str, data: bytes, sha256: str) -> bool:
        args = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "Body": data,
            "IfNoneMatch": "*",
            # The algorithm header too: Object Lock puts require it, and it tells the server what to validate.
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": _b64(sha256),
            **self._lock_args(),
        }
        response = self._conditional(self.client.put_object, args)
        if response is None:
            return False
        returned = response.get("ChecksumSHA256")
        if returned is not None and returned != _b64(sha256):
            raise StoredObjectError(
                f"{self.object_url(key)}: the server reports ChecksumSHA256 {returned} for the stored object, "
                f"expected {_b64(sha256)} (sha256:{sha256})"
            )
        return True

    def _put_multipart(self, key: str, reader: Any, source: Source, size: int, sha256: str) -> bool:
        full_key = self._key(key)
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=full_key, ChecksumAlgorithm="SHA256", **self._lock_args()
        )
        upload_id = upload["UploadId"]
        completed = False
        try:
            parts, sent, digest = self._upload_parts(full_key, upload_id, reader)
            # The whole file, as sent, must be the manifest's file before anything becomes visible.
            _check_bytes(key, source, sent, digest, size, sha256)
            response = self._conditional(
                self.client.complete_multipart_upload,
                {
                    "Bucket": self.bucket,
                    "Key": full_key,
                    "UploadId": upload_id,
                    "MultipartUpload": {"Parts": parts},
                    "IfNoneMatch": "*",
                },
            )
            completed = response is not None
        finally:
            if not completed:
                self._abort(full_key, upload_id)
        returned = (response or {}).get("ChecksumSHA256")
        expected = _composite_sha256(parts)
        if returned is not None and returned.split("-")[0] != expected.split("-")[0]:
            raise StoredObjectError(
                f"{self.object_url(key)}: the server reports ChecksumSHA256 {returned} for the completed upload, "
                f"the parts sent make {expected}"
            )
        return completed

    def _upload_parts(self, full_key: str, upload_id: str, reader: Any) -> tuple[list[dict[str, Any]], int, str]:
        """Read the file once, in order (the whole-file sha256), sending its parts in parallel as they are read."""
        from concurrent.futures import ThreadPoolExecutor

        whole = hashlib.sha256()
        sent = 0

        def send(number: int, chunk: bytes) -> dict[str, Any]:
            try:
                checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                response = self.client.upload_part(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id, PartNumber=number,
                    Body=chunk, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
                )
                returned = response.get("ChecksumSHA256")
                if returned is not None and returned != checksum:
                    raise StoredObjectError(f"s3://{self.bucket}/{full_key}: part {number} stored with checksum "
                                            f"{returned}, sent {checksum}")
                return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}
            finally:
                self._part_slots.release()

        futures = []
        with ThreadPoolExecutor(max_workers=self.max_parts_in_flight, thread_name_prefix="airlock-s3-part") as pool:
            try:
                while True:
                    self._part_slots.acquire()  # released by send(): bounds the parts held in memory
                    chunk = reader.read(self.part_size)
                    if not chunk:
                        self._part_slots.release()
                        break
                    whole.update(chunk)
                    sent += len(chunk)
                    futures.append(pool.submit(send, len(futures) + 1, chunk))
                    if any(f.done() and f.exception() is not None for f in futures):
                        break
            except BaseException:
                for future in futures:
                    if future.cancel():
                        self._part_slots.release()  # send() will never run to release it
                raise
            parts = run_all(futures)
        return parts, sent, whole.hexdigest()

    def _abort(self, full_key: str, upload_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
        except (BotoCoreError, ClientError):
            pass  # an unfinished upload is invisible; a bucket lifecycle rule reaps it

    def _conditional(self, call: Any, args: dict[str, Any]) -> dict[str, Any] | None:
        """``call(**args)``; None when the key already exists (412)."""
        from botocore.exceptions import ClientError

        for attempt in range(_CONFLICT_RETRIES):
            try:
                return call(**args)
            except ClientError as exc:
                code, status = _code(exc), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "PreconditionFailed" or status == 412:
                    return None
                if code == "ConditionalRequestConflict" or status == 409:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise RegistryError(f"s3://{self.bucket}/{args['Key']}: write failed ({code}: {exc})") from None
        raise RegistryError(f"s3://{self.bucket}/{args['Key']}: conditional write kept conflicting; try again")

    # ------------------------------------------------------------------ reading

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise RegistryError(f"{self.object_url(key)}: cannot read its metadata ({_code(exc)})") from None
        return True

    def stored_sha256(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except ClientError as exc:
            if _missing(exc):
                return None
            raise RegistryError(f"{self.object_url(key)}: cannot read its metadata ({_code(exc)})") from None
        reported = _full_object_sha256(head)
        if reported is not None and not self.reread:
            return reported
        reread = self._hash_object(key)
        if reported is not None and reported != reread:
            raise StoredObjectError(
                f"{self.object_url(key)}: the server reports sha256:{reported} but the stored bytes hash to "
                f"sha256:{reread}"
            )
        return reread

    def _hash_object(self, key: str) -> str:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            raise RegistryError(f"{self.object_url(key)}: cannot read it back ({_code(exc)})") from None
        from botocore.exceptions import FlexibleChecksumError

        hasher = hashlib.sha256()
        try:
            with body:
                for chunk in body.iter_chunks(_READ_CHUNK):
                    hasher.update(chunk)
        except FlexibleChecksumError as exc:
            # botocore checks the body against the checksum the server reports as it streams it.
            raise StoredObjectError(f"{self.object_url(key)}: stored bytes hash to something other than the "
                                    f"server's checksum ({exc})") from None
        return hasher.hexdigest()

    def read(self, key: str, max_bytes: int = MAX_CONTROL_OBJECT_BYTES) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise RegistryError(f"{self.object_url(key)}: cannot read ({_code(exc)})") from None
        if response.get("ContentLength", 0) > max_bytes:
            response["Body"].close()
            raise RegistryError(f"{self.object_url(key)}: larger than {max_bytes} bytes; not a registry control object")
        from botocore.exceptions import FlexibleChecksumError

        try:
            with response["Body"] as body:
                return body.read()
        except FlexibleChecksumError as exc:
            raise StoredObjectError(f"{self.object_url(key)}: stored bytes do not match the server's checksum "
                                    f"({exc})") from None

    def open_object(self, key: str) -> BinaryIO | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except ClientError as exc:
            if _missing(exc):
                return None
            raise RegistryError(f"{self.object_url(key)}: cannot read ({_code(exc)})") from None
        return io.BufferedReader(_CheckedBody(response["Body"], self.object_url(key)), buffer_size=_READ_CHUNK)

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        for page in self._pages(prefix, delimiter=None):
            keys.extend(self._relative(item["Key"]) for item in page.get("Contents", []))
        return sorted(keys)

    def list_children(self, prefix: str) -> list[str]:
        names: set[str] = set()
        full_prefix = self._key(prefix)
        for page in self._pages(prefix, delimiter="/"):
            names.update(p["Prefix"][len(full_prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(item["Key"][len(full_prefix):] for item in page.get("Contents", []))
        return sorted(n for n in names if n)

    def _pages(self, prefix: str, delimiter: str | None):
        args = {"Bucket": self.bucket, "Prefix": self._key(prefix)}
        if delimiter:
            args["Delimiter"] = delimiter
        from botocore.exceptions import ClientError

        try:
            yield from self.client.get_paginator("list_objects_v2").paginate(**args)
        except ClientError as exc:
            raise RegistryError(f"s3://{self.bucket}/{args['Prefix']}: cannot list ({_code(exc)})") from None

    # ------------------------------------------------------------------ the bucket

    def check_exists(self) -> None:
        """Raise unless the bucket exists and these credentials may use it (readers: a wrong setting is exit 2)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            what = "does not exist" if _code(exc) in ("404", "NoSuchBucket") or status == 404 else \
                f"cannot be read ({_code(exc)})"
            raise RegistryError(f"registry {self.url}: bucket {self.bucket} {what}") from None

    # ------------------------------------------------------------------ leftovers (airlock.registry.leftovers)

    def leftovers(self, prefix: str, *, now: float | None = None) -> list[Leftover]:
        """Unfinished multipart uploads under ``prefix``; live when a part (or the start) is recent."""
        from botocore.exceptions import ClientError

        now = time.time() if now is None else now
        found = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else ""))
            for page in pages:
                for upload in page.get("Uploads", []):
                    found.append(self._upload_leftover(upload["Key"], upload["UploadId"], upload["Initiated"], now))
        except ClientError as exc:
            raise RegistryError(f"s3://{self.bucket}/{self._key(prefix) if prefix else self.prefix}: cannot list "
                                f"unfinished uploads ({_code(exc)})") from None
        return sorted((item for item in found if item is not None), key=lambda item: (item.key, item.handle))

    def remove_leftover(self, item: Leftover, *, now: float | None = None) -> bool:
        from botocore.exceptions import ClientError

        # Look again right before aborting: a part may have arrived since the listing.
        current = self._upload_leftover(self._key(item.key), item.handle, None, time.time() if now is None else now)
        if current is None or current.live:
            return False
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(item.key), UploadId=item.handle)
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload":
                return False
            raise RegistryError(f"{self.object_url(item.key)}: cannot abort unfinished upload ({_code(exc)})") from None
        return True

    def _upload_leftover(self, full_key: str, upload_id: str, initiated: datetime | None,
                         now: float) -> Leftover | None:
        from botocore.exceptions import ClientError

        last = initiated.timestamp() if initiated is not None else None
        size = 0
        try:
            for page in self.client.get_paginator("list_parts").paginate(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id):
                for part in page.get("Parts", []):
                    size += int(part.get("Size", 0))
                    if part.get("LastModified") is not None:
                        stamp = part["LastModified"].timestamp()
                        last = stamp if last is None else max(last, stamp)
                if initiated is None and page.get("Initiated") is not None:
                    stamp = page["Initiated"].timestamp()
                    last = stamp if last is None else max(last, stamp)
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload":
                return None  # completed or aborted in between
            raise RegistryError(f"s3://{self.bucket}/{full_key}: cannot list the parts of an unfinished upload "
                                f"({_code(exc)})") from None
        age = max(0.0, now - last) if last is not None else 0.0
        live = last is None or age < _policy.UPLOAD_STALE_S
        why = (f"last activity {describe_age(age)} ago" if last is not None else "no timestamps; left alone")
        why = f"{why} ({'a promotion may still be sending it' if live else 'no writer'})"
        return Leftover(key=self._relative(full_key), kind="unfinished multipart upload", size=size, age_s=age,
                        live=live, why=why, handle=upload_id)

    # ------------------------------------------------------------------ keys

    def _key(self, key: str) -> str:
        parts = key.rstrip("/").split("/") if key else []
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise RegistryError(f"registry key {key!r} is not a relative POSIX path inside the registry")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1:] if self.prefix else full_key


# --------------------------------------------------------------------------- helpers


class _CheckedBody(io.RawIOBase):
    """A GET body as a binary stream; botocore's streaming checksum failure becomes a StoredObjectError."""

    def __init__(self, body: Any, url: str) -> None:
        super().__init__()
        self._body = body
        self._url = url

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        from botocore.exceptions import BotoCoreError, FlexibleChecksumError

        try:
            return self._body.read(None if size is None or size < 0 else size)
        except FlexibleChecksumError as exc:
            # botocore checks the bytes against the checksum the server reports as they stream by.
            raise StoredObjectError(f"{self._url}: stored bytes do not match the server's checksum ({exc})") from None
        except BotoCoreError as exc:  # the connection dropped or timed out mid-object
            raise RegistryError(f"{self._url}: reading failed ({exc})") from None

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _composite_sha256(parts: list[dict[str, Any]]) -> str:
    """S3's checksum of a multipart object: sha256 over the parts' raw sha256 digests, then ``-<parts>``."""
    digest = hashlib.sha256(b"".join(base64.b64decode(p["ChecksumSHA256"]) for p in parts)).digest()
    return f"{base64.b64encode(digest).decode()}-{len(parts)}"


def _b64(sha256_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def _full_object_sha256(head: dict[str, Any]) -> str | None:
    """The server's sha256 of the whole object, when it reports one (not a multipart checksum-of-checksums)."""
    value = head.get("ChecksumSHA256")
    # A multipart object's ETag (and composite checksum) carries a "-<parts>" suffix.
    multipart = "-" in head.get("ETag", "") or "-" in (value or "")
    if not value or multipart or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _read_small(path: Path, limit: int) -> bytes:
    # O_NOFOLLOW: a symlink swapped into the model directory after hashing is refused, not followed.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceChangedError(f"{path}: cannot open ({exc.strerror}); nothing stored") from None
    with open(fd, "rb", closefd=True) as reader:
        return reader.read(limit + 1)


def _check_bytes(key: str, source: Source, size: int, digest: str, want_size: int, want_sha256: str) -> None:
    if (size, digest) != (want_size, want_sha256):
        what = str(source) if isinstance(source, Path) else f"<{want_size} bytes>"
        raise SourceChangedError(
            f"{what} -> {key}: expected {want_size} bytes sha256:{want_sha256}, read {size} bytes sha256:{digest}; "
            f"the file changed since its manifest, nothing stored"
        )


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def _missing(exc: Any) -> bool:
    return _code(exc) in {"404", "NoSuchKey", "NotFound"}
