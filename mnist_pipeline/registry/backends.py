"""Which storage backend a registry location names, by its URL scheme (as Prefect's
filesystems and fsspec choose one): a folder path or file:// URL is a local folder, an
s3://bucket/prefix URL an S3 bucket on the endpoint boto3 is configured for."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry.local import LocalFolder
from mnist_pipeline.registry.storage import Storage


def local_folder(location: str | Path, role: str = "registry") -> Path | None:
    """The folder `location` names: a path, or a file:// URL (file:///path or
    file://localhost/path, percent-decoded); None when it names object storage or another
    scheme. RegistryError for a file:// URL of another host or none at all."""
    if isinstance(location, Path):
        return location
    try:
        parsed = urlparse(location)
    except ValueError as exc:
        raise RegistryError(f"{role} location {location!r} is not a valid URL: {exc}") from None
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise RegistryError(
                f"{role} location {location!r}: a file:// URL names a folder on this machine "
                "(file:///path)"
            )
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # "C:\..." on Windows
        return Path(location)
    return None


def open_storage(location: str | Path, role: str = "registry") -> Storage:
    """The backend for `location`: a folder path, a file:// URL or s3://BUCKET/PREFIX (other
    schemes are refused with the list of those supported); `role` names the store in messages."""
    folder = local_folder(location, role)
    if folder is not None:
        return LocalFolder(folder, role)
    location = str(location)
    scheme = urlparse(location).scheme
    if scheme == "s3":
        from mnist_pipeline.registry.s3 import S3Bucket  # boto3: the optional [s3] extra

        if location.partition(":")[2][:2] != "//":  # s3:/bucket would otherwise name no bucket
            raise RegistryError(f"{role} location {location!r} is not a URL: write s3://...")

        return S3Bucket(location, role=role)
    raise RegistryError(
        f"{role} location {location!r}: unsupported scheme {scheme!r} "
        "(supported: a folder path, a file:// URL, s3://BUCKET/PREFIX)"
    )
